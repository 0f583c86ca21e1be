import type { Protocol } from '../wire/names.ts'
import type { Client } from './registry.ts'

/**
 * Who may register a node id that is already taken. A node id belongs to the token that registered
 * it: another token never takes it. The same token takes it over from another connection or address
 * only once the holder is gone, so a second agent started with the same id (or an attacker holding
 * that token's sibling) cannot knock a live agent off and take its tasks. Pure.
 */
export type ClaimVerdict =
  /** Nobody holds the id. */
  | 'new'
  /** The holder itself, refreshing. */
  | 'same'
  /** Held by another token: never. */
  | 'other_token'
  /** Held by a live client of the same token: refused. */
  | 'held'
  /** Held by a silent HTTP client of the same token: the newcomer takes over. */
  | 'takeover'
  /** Held by a WebSocket connection of the same token: ask it (a ping) whether it is still there. */
  | 'probe'

export interface Claim {
  /** The digest of the token the claim comes with (security/access.ts tokenDigest; never the token itself). */
  holder: string
  protocol: Protocol
  ip: string
  port: number
  /** The WebSocket connection it comes over. */
  connectionId?: number
}

/** `silenceMs`: how long an HTTP holder must have been silent (missed heartbeats) before another address takes its id. */
export function claimVerdict(existing: Client | undefined, claim: Claim, nowMs: number, silenceMs: number): ClaimVerdict {
  if (existing === undefined) return 'new'
  if (existing.holder !== claim.holder) return 'other_token'
  if (existing.protocol === claim.protocol) {
    const same = claim.protocol === 'ws' ? existing.connectionId === claim.connectionId : existing.ip === claim.ip && existing.port === claim.port
    if (same) return 'same'
  }
  // A WebSocket holder is there for as long as its connection is open; only asking tells whether it still answers.
  if (existing.protocol === 'ws') return claim.protocol === 'ws' ? 'probe' : 'held'
  return nowMs - existing.lastSeen > silenceMs ? 'takeover' : 'held'
}
