import type { NodeConflictView } from '../wire/views.ts'

/** One node id claimed by a second agent while its holder lives. */
interface Conflict {
  otherAddress: string
  sinceMs: number
  lastMs: number
  count: number
  loggedAtMs: number
}

export interface NodeConflictsDeps {
  log: (line: string) => void
  /** Wall-clock ms. */
  now: () => number
  /** How long a conflict is shown after the last refused claim: two client_ttl, as reloaded. */
  forgetMs: () => number
}

/**
 * Node ids claimed by two live agents at once (the original Moonlight's HTTP client defaults the id
 * to the host name, so cloned machines share it). Each is logged at most once a minute with both
 * addresses — two agents beating every 15 s would otherwise fill the log — and shown on the holder's
 * row of /clients and the dashboard until the other has stopped trying for `forgetMs`.
 */
export class NodeConflicts {
  private readonly byNode = new Map<string, Conflict>()

  /** A conflict began, or counted again: the holder's view changed (the dashboard's feed, wired after the fleet, follows). */
  onChanged?: (nodeId: string) => void

  constructor(private readonly deps: NodeConflictsDeps) {}

  /** The agent at `claimantAddress` was refused `nodeId`, held by a live agent at `holderAddress`. */
  report(nodeId: string, holderAddress: string, claimantAddress: string): void {
    const nowMs = this.deps.now()
    let conflict = this.current(nodeId, nowMs)
    const log = conflict === undefined || nowMs - conflict.loggedAtMs >= CONFLICT_LOG_EVERY_MS
    if (conflict === undefined) {
      // Bounded: forgotten conflicts go whenever a new one comes, and past the cap the oldest.
      this.forgetOld(nowMs)
      conflict = { otherAddress: claimantAddress, sinceMs: nowMs, lastMs: nowMs, count: 0, loggedAtMs: nowMs }
      this.byNode.set(nodeId, conflict)
    }
    conflict.count++
    conflict.lastMs = nowMs
    conflict.otherAddress = claimantAddress
    if (log) {
      conflict.loggedAtMs = nowMs
      this.deps.log(
        `[mls] node_id conflict: "${nodeId}" is held by a live agent at ${holderAddress}; another agent at ${claimantAddress} was refused ` +
          `(${conflict.count} time${conflict.count === 1 ? '' : 's'} since ${new Date(conflict.sinceMs).toISOString()}; give each agent its own node id)`,
      )
    }
    this.onChanged?.(nodeId)
  }

  /** The conflict on `nodeId` as /clients shows it, if one is current. */
  view(nodeId: string): NodeConflictView | undefined {
    if (this.byNode.size === 0) return undefined
    const conflict = this.current(nodeId, this.deps.now())
    if (conflict === undefined) return undefined
    return {
      other_address: conflict.otherAddress,
      since: new Date(conflict.sinceMs).toISOString(),
      last_at: new Date(conflict.lastMs).toISOString(),
      count: conflict.count,
    }
  }

  private current(nodeId: string, nowMs: number): Conflict | undefined {
    const conflict = this.byNode.get(nodeId)
    if (conflict === undefined || nowMs - conflict.lastMs < this.deps.forgetMs()) return conflict
    this.byNode.delete(nodeId)
    return undefined
  }

  private forgetOld(nowMs: number): void {
    const forgetMs = this.deps.forgetMs()
    for (const [nodeId, conflict] of this.byNode) if (nowMs - conflict.lastMs >= forgetMs) this.byNode.delete(nodeId)
    // A Map iterates in insertion order: the first is the oldest.
    while (this.byNode.size >= MAX_CONFLICTS) this.byNode.delete(this.byNode.keys().next().value!)
  }
}

const CONFLICT_LOG_EVERY_MS = 60_000
export const MAX_CONFLICTS = 10_000
