import type { HealthState, Protocol, Scheme } from '../wire/names.ts'
import type { ClientView, RegionCounts } from '../wire/views.ts'
import { Balancer, type Excluded, type Member } from './balancer.ts'
import type { HealthPolicy, HealthRecord } from './health.ts'
import * as health from './health.ts'
import type { Regions } from './regions.ts'
import { hasSlot, httpSlotShare, type SlotOffer, slotLimit } from './slots.ts'
import { effectiveWeight, RAMP_START_FACTOR, rampFactor } from './slow-start.ts'

export type { Protocol } from '../wire/names.ts'
export type { HealthPolicy } from './health.ts'

export interface Client extends HealthRecord {
  /** The instance that holds it; undefined: this one. */
  instance?: string
  /** The holder's own verdict on its health, when another instance holds it. */
  holderState?: HealthState
  route: Route
  /** The digest of the token (security/access.ts tokenDigest) that registered it. */
  holder: string
  nodeId: string
  region: string
  protocol: Protocol
  ip: string
  port: number
  /** How an HTTP client's /work is called: `https` is verified against the system's CAs or `agents.ca`. */
  scheme: Scheme
  /** 0 drains the client: it keeps its tasks but gets no new ones. */
  weight: number
  /**
   * Drained by an operator (POST /clients/{node_id}/drain): as if its weight were 0 until undrained.
   * A flag beside the weight, not the weight itself: the agent announces its weight with every
   * heartbeat, which would undo an operator's 0 within seconds, and undrain restores what it announced.
   */
  operatorDrained: boolean
  /**
   * When an operator's ejection (POST /clients/{node_id}/eject) ends: while the client is ejected until
   * exactly then, its ejection is the operator's, which the cluster shares (health's stays each instance's own).
   */
  operatorEjectedUntil?: number
  /** The share of `weight` the balancers give it while it ramps up after a join or an ejection (slow start); 1 otherwise. */
  rampFactor: number
  /** Changes each time the node registers again, so a stale connection cannot remove the new one. */
  connectionId: number
  registeredAt: number
  lastSeen: number
  inFlight: number
  /** Its slots (`max_in_flight`): never more of its tasks in flight at once; undefined, no limit. */
  maxInFlight?: number | undefined
  /** In a cluster, an HTTP agent's slots this instance may use (src/fleet/slots.ts httpSlotShare); undefined: all of them. */
  slotShare?: number | undefined
  /** Another instance holds this WebSocket agent and says its slots are all taken there. */
  holderFull?: boolean | undefined
  /** A client held here: whether the listeners (watchFull) were last told it is full. */
  sharedFull?: boolean
  /** Counted in `fullIn` (eligible but out of the balancers for want of a slot). */
  countedFull?: boolean
  successes: number
  failures: number
  /** Exponentially weighted mean of answered attempts, in ms; 0 until the first answer. */
  latencyMs: number
  /**
   * Its places in the balancers of its region and each ancestor (Regions.chain's order), held here
   * so that joining, reweighing and leaving look nothing up: no map of members per balancer. Absent
   * while it is in none. The registry's own; never shown.
   */
  seats?: Member<string>[] | undefined
  /**
   * The node's next record, when this one was replaced (a new connection or address) or forgotten while
   * it still had tasks in flight: they count against that one (it took their count over) until they end.
   * Set only on such a record; never shown.
   */
  successor?: Client | undefined
}

/** How a task reaches a client: HTTP (any instance calls an HTTP agent itself), its WebSocket here, or relayed to the instance holding its WebSocket. */
export type Route = 'http' | 'ws' | 'relay'

/**
 * What an agent (or, in a cluster, the instance holding it) says of itself: the part of the client
 * record that comes from outside, the rest being this registry's own bookkeeping. Derived from
 * `Client` so the two cannot drift; the cluster's wire record (src/cluster/messages.ts) converts to it.
 */
export type ClientAnnouncement = Pick<Client, 'holder' | 'nodeId' | 'region' | 'protocol' | 'ip' | 'port' | 'weight'> &
  Partial<Pick<Client, 'instance' | 'scheme' | 'maxInFlight' | 'holderFull' | 'operatorDrained'>>

/** How one pick looks for a client (the dispatcher's per-task routing). */
export interface PickOptions {
  /** Clients already tried for this task. */
  exclude?: ReadonlySet<string>
  /** cluster.prefer_local: this instance's own clients before others'. */
  preferLocal?: boolean
  /** Sticky routing: the key's rendezvous owner among the pool's clients instead of the next by round-robin. */
  key?: string
  /** false (fallback "none"): only the first pool looked at, never an ancestor's. */
  climb?: boolean
  /** Look from this pool up (where an earlier attempt of the task found candidates), not from the region itself. */
  fromPool?: string
  /** Never climb past this region (a token's boundary); a chain that does not reach it has no pool at all. */
  boundary?: string
}

export type RegistryEvent = { type: 'joined' | 'updated' | 'state'; client: Client } | { type: 'left'; client: Client; reason: string }

const LATENCY_SMOOTHING = 0.2
/** Nodes whose drain or ejection is kept while they are away (Registry.kept). */
export const MAX_KEPT = 10_000

/** What a node that left takes back when it returns (see Registry.kept). */
type KeptState = Pick<Client, 'operatorDrained' | 'state' | 'ejectedUntil' | 'ejections' | 'operatorEjectedUntil'>

/**
 * Every known client and one balancer per region. A client sits in the balancer of its own region
 * and of every ancestor, so picking for any region costs one balancer pick, not a scan. Health
 * decisions are src/fleet/health.ts's; the registry keeps the balancers in step with them.
 * Pure: time comes in as `now` (ms); events go out through `onEvent`.
 */
export class Registry {
  /** New node ids past this many clients are refused (`hasRoomFor`): a flood of ids must not grow the server without bound. */
  maxClients = Number.POSITIVE_INFINITY
  private readonly clients = new Map<string, Client>()
  /** Clients held by other instances (cluster mode), for prefer_local. */
  private readonly remote = new Set<string>()
  /** Records removed (forgotten, disconnected) with tasks still in flight, by node id: a node back before they end takes their count. */
  private readonly lingering = new Map<string, Client>()
  /**
   * What a node that left (disconnected, silent) takes back when it returns: an operator's drain, and an
   * ejection or the trial after it. All are about the node, not a connection, or a reconnect would undo them.
   */
  private readonly kept = new Map<string, KeptState>()
  /** Only regions with a client that can take tasks have one; a region's last client leaving forgets it. */
  private balancers = new Map<string, Balancer<string>>()
  /** How many clients are registered in each region (their own region, not its ancestors). */
  private readonly perRegion = new Map<string, number>()
  /** Clients whose slow start is under way: advanceRamps looks only at these, not at the whole fleet. */
  private readonly ramping = new Set<Client>()
  /** Per pool (a region and every ancestor of a full client's region): how many of its clients could take a task but for their slots. */
  private fullIn = new Map<string, number>()
  /** routing.balance: smooth weighted round-robin, or least-request (power of two choices on in-flight / weight). */
  balance: 'round_robin' | 'least_request' = 'round_robin'
  /** Where least-request's draws come from; injected in tests. */
  random: () => number = Math.random
  /** Hands a client with room a task waiting for a slot (src/tasks/slot-waiting.ts, in the order of src/tasks/priority-queue.ts); none: nothing ever waits. */
  offerSlot: SlotOffer<Client> | undefined = undefined
  /** Told when a client held here fills up or has room again: the cluster tells the other instances, the dashboards show it. */
  private readonly fullListeners: Array<(client: Client) => void> = []
  /** Live instances of the cluster (1 alone): an HTTP agent's slots are shared among them. */
  private instances = 1
  private nextConnectionId = 1

  constructor(
    private regions: Regions,
    private policy: HealthPolicy,
    private readonly onEvent: (event: RegistryEvent) => void = () => {},
  ) {}

  get size(): number {
    return this.clients.size
  }

  get(nodeId: string): Client | undefined {
    return this.clients.get(nodeId)
  }

  /** Whether `nodeId` may register: it is known already, or there is room under maxClients. */
  hasRoomFor(nodeId: string): boolean {
    return this.clients.size < this.maxClients || this.clients.has(nodeId)
  }

  /** Whether any client is registered in `region` itself (whatever its health). */
  hasClientsIn(region: string): boolean {
    return this.perRegion.has(region)
  }

  private countIn(region: string, change: 1 | -1): void {
    const count = (this.perRegion.get(region) ?? 0) + change
    if (count > 0) this.perRegion.set(region, count)
    else this.perRegion.delete(region)
  }

  /** How many regions have balancer state now: bounded by where clients are, not by every name ever seen. */
  get trackedRegions(): number {
    return this.balancers.size
  }

  all(): IterableIterator<Client> {
    return this.clients.values()
  }

  /** How many clients this instance holds itself (in a cluster the registry also keeps the others'). */
  localCount(): number {
    let count = 0
    for (const client of this.clients.values()) if (client.instance === undefined) count++
    return count
  }

  /**
   * Registers a client or refreshes it; a changed region or weight moves it between balancers.
   * An HTTP client is the same client while its address is; a WebSocket client while it speaks over
   * the same connection (`connectionId`): a new socket for the node replaces the old record.
   */
  announce(announcement: ClientAnnouncement, now: number, connectionId?: number): { client: Client; previous?: Client } {
    const existing = this.clients.get(announcement.nodeId)
    const sameClient =
      existing !== undefined &&
      existing.protocol === announcement.protocol &&
      existing.instance === announcement.instance &&
      // Another instance's client is the same while that instance says so; only the holder knows its connection.
      (announcement.instance !== undefined ||
        (announcement.protocol === 'ws'
          ? existing.connectionId === connectionId
          : existing.ip === announcement.ip && existing.port === announcement.port && existing.scheme === (announcement.scheme ?? 'http')))
    if (existing && sameClient) {
      existing.lastSeen = now
      // A holder's client may move or change address without a new record here.
      existing.ip = announcement.ip
      existing.port = announcement.port
      if (
        existing.region !== announcement.region ||
        existing.weight !== announcement.weight ||
        existing.maxInFlight !== announcement.maxInFlight ||
        (announcement.instance !== undefined && existing.operatorDrained !== (announcement.operatorDrained === true))
      ) {
        this.leaveBalancers(existing)
        this.countIn(existing.region, -1)
        this.countIn(announcement.region, 1)
        existing.region = announcement.region
        existing.weight = announcement.weight
        existing.maxInFlight = announcement.maxInFlight
        existing.holderFull = announcement.holderFull
        // Another instance's client is drained as its holder says.
        if (announcement.instance !== undefined) existing.operatorDrained = announcement.operatorDrained === true
        existing.slotShare = this.shareOf(existing)
        this.syncBalancers(existing)
        this.onEvent({ type: 'updated', client: existing })
      } else if ((existing.holderFull === true) !== (announcement.holderFull === true)) {
        // The holder filled up or has room again: as often as its tasks end, so no event (nor log line) for it.
        existing.holderFull = announcement.holderFull
        this.syncBalancers(existing)
      }
      return { client: existing }
    }
    // A new client, or a node that came back on another connection/address: a fresh record.
    if (existing) this.leaveBalancers(existing)
    // Its slots are the node's, not a record's: tasks still on the record it replaces count against it until they end.
    const before = existing ?? this.lingering.get(announcement.nodeId)
    this.lingering.delete(announcement.nodeId)
    const kept = existing ?? this.kept.get(announcement.nodeId)
    this.kept.delete(announcement.nodeId)
    const client: Client = {
      ...announcement,
      route: announcement.protocol === 'http' ? 'http' : announcement.instance === undefined ? 'ws' : 'relay',
      scheme: announcement.scheme ?? 'http',
      ...health.freshHealth(now),
      rampFactor: this.rampStart(),
      connectionId: this.nextConnectionId++,
      // A node that reconnects stays drained: the operator's intent is about the node, not its connection.
      // Another instance's client is drained as its holder says; kept here, that drain follows the node
      // should it come back to this instance.
      operatorDrained: announcement.instance !== undefined ? announcement.operatorDrained === true : (kept?.operatorDrained ?? false),
      registeredAt: now,
      lastSeen: now,
      inFlight: before === undefined ? 0 : before.inFlight,
      successes: existing?.successes ?? 0,
      failures: existing?.failures ?? 0,
      latencyMs: existing?.latencyMs ?? 0,
    }
    client.slotShare = this.shareOf(client)
    if (before !== undefined && before.inFlight > 0) before.successor = client
    // An ejection (health's or an operator's) lasts its time whatever connection the node comes back on;
    // one whose back-off is over still ends in a trial, and counts toward the next back-off, or a
    // reconnect would be a way around both.
    if (kept !== undefined && (kept.state === 'ejected' || kept.state === 'probation')) {
      const ejected = kept.state === 'ejected' && kept.ejectedUntil > now
      client.state = ejected ? 'ejected' : 'probation'
      client.ejectedUntil = kept.ejectedUntil
      client.ejections = kept.ejections
      client.operatorEjectedUntil = kept.operatorEjectedUntil
      client.rampFactor = 1
    }
    if (existing) this.countIn(existing.region, -1)
    this.countIn(client.region, 1)
    this.clients.set(client.nodeId, client)
    if (client.instance === undefined) this.remote.delete(client.nodeId)
    else this.remote.add(client.nodeId)
    if (existing) this.ramping.delete(existing)
    if (client.rampFactor < 1) this.ramping.add(client)
    this.syncBalancers(client)
    this.onEvent({ type: 'joined', client })
    return { client, previous: existing }
  }

  /** Marks the client as alive (a heartbeat, a pong or any message). */
  touch(nodeId: string, now: number): void {
    const client = this.clients.get(nodeId)
    if (client) client.lastSeen = now
  }

  setWeight(nodeId: string, weight: number): void {
    const client = this.clients.get(nodeId)
    if (!client || client.weight === weight) return
    client.weight = weight
    this.syncBalancers(client)
    this.onEvent({ type: 'updated', client })
  }

  /** A WebSocket heartbeat announces new slots: more of them may take waiting tasks at once. */
  setMaxInFlight(nodeId: string, maxInFlight: number | undefined): void {
    const client = this.clients.get(nodeId)
    if (!client || client.maxInFlight === maxInFlight) return
    client.maxInFlight = maxInFlight
    client.slotShare = this.shareOf(client)
    this.syncBalancers(client)
    this.onEvent({ type: 'updated', client })
  }

  /** The cluster's live instances changed: every HTTP agent's share of slots follows (src/fleet/slots.ts httpSlotShare). */
  setInstanceCount(instances: number): void {
    if (instances === this.instances) return
    this.instances = instances
    for (const client of this.clients.values()) {
      const share = this.shareOf(client)
      if (share === client.slotShare) continue
      client.slotShare = share
      this.syncBalancers(client)
    }
  }

  /** This instance's share of an HTTP agent's slots in a cluster; undefined: it may use them all. */
  private shareOf(client: Client): number | undefined {
    if (client.protocol !== 'http' || client.maxInFlight === undefined || this.instances === 1) return undefined
    return httpSlotShare(client.maxInFlight, this.instances)
  }

  /** A task goes to `client` (any kind: single, broadcast, relayed): it takes one of its slots; full, it leaves the balancers. */
  acquire(client: Client): void {
    client.inFlight++
    // Only a client that announced slots can fill up: for the others this is the whole cost.
    if (client.maxInFlight === undefined) return
    if (client.inFlight >= slotLimit(client)! && !client.countedFull && this.isCurrent(client)) this.syncBalancers(client)
    else this.noteFull(client)
  }

  /** A task on `client` ended: its slot goes to the task waiting longest for one there, else back to the balancers. */
  release(client: Client): void {
    client.inFlight--
    // A replaced or forgotten record: the node's current one took its tasks' count, and gets the slot back.
    if (client.successor !== undefined) {
      this.release(client.successor)
      return
    }
    if (client.inFlight === 0 && this.lingering.size > 0 && this.lingering.get(client.nodeId) === client) this.lingering.delete(client.nodeId)
    if (client.maxInFlight === undefined || !this.isCurrent(client)) return
    if (client.countedFull || this.offerSlot !== undefined) this.syncBalancers(client)
    else this.noteFull(client)
  }

  /** Calls `listener` each time a client held here fills up or has room again; not on every task, which would be as often as tasks end. */
  watchFull(listener: (client: Client) => void): void {
    this.fullListeners.push(listener)
  }

  /** A client held here: tells the listeners when it fills up or has room again, and only then. */
  private noteFull(client: Client): void {
    if (client.instance !== undefined || this.fullListeners.length === 0 || !this.isCurrent(client)) return
    const full = !hasSlot(client)
    if (full === (client.sharedFull === true)) return
    client.sharedFull = full
    for (const listener of this.fullListeners) listener(client)
  }

  /** An operator drains (true) or undrains (false) the client; false if there is no such client. */
  setOperatorDrained(nodeId: string, drained: boolean): Client | undefined {
    const client = this.clients.get(nodeId)
    if (!client) return undefined
    if (client.operatorDrained === drained) return client
    client.operatorDrained = drained
    this.syncBalancers(client)
    this.onEvent({ type: 'updated', client })
    return client
  }

  /** An operator ejects the client for `ms`, as a health ejection would; when it ends, the client is on probation like any other. */
  eject(nodeId: string, now: number, ms: number): Client | undefined {
    const client = this.clients.get(nodeId)
    if (!client) return undefined
    health.ejectFor(client, now, ms)
    client.operatorEjectedUntil = client.ejectedUntil
    this.ramping.delete(client)
    this.changed(client)
    return client
  }

  /**
   * The instance holding another instance's client says an operator ejected it until `until`: this
   * instance sends it nothing either until then (and then gives it a trial of its own), or the
   * operator's ejection would hold at the holder alone.
   */
  ejectAsHolderSays(nodeId: string, now: number, until: number): void {
    const client = this.clients.get(nodeId)
    if (client?.instance === undefined || until <= now || (client.state === 'ejected' && client.ejectedUntil >= until)) return
    this.eject(nodeId, now, until - now)
  }

  /**
   * Removes a client; with `connectionId`, only if that connection is still the current one. Its drain
   * and a running ejection are kept for its return (see forget).
   */
  remove(nodeId: string, reason: string, connectionId?: number): Client | undefined {
    return this.take(nodeId, reason, connectionId, true)
  }

  /** An operator forgets a client: removed, and nothing of it is kept for its return (forget is forget). */
  forget(nodeId: string, reason: string): Client | undefined {
    return this.take(nodeId, reason, undefined, false)
  }

  private take(nodeId: string, reason: string, connectionId: number | undefined, keep: boolean): Client | undefined {
    const client = this.clients.get(nodeId)
    if (!client || (connectionId !== undefined && client.connectionId !== connectionId)) return undefined
    this.clients.delete(nodeId)
    if (client.inFlight > 0) this.lingering.set(nodeId, client)
    if (keep && (client.operatorDrained || client.state === 'ejected' || client.state === 'probation')) {
      this.kept.set(nodeId, {
        operatorDrained: client.operatorDrained,
        state: client.state,
        ejectedUntil: client.ejectedUntil,
        ejections: client.ejections,
        operatorEjectedUntil: client.operatorEjectedUntil,
      })
      // Bounded whatever the churn: the oldest kept state goes first.
      if (this.kept.size > MAX_KEPT) this.kept.delete(this.kept.keys().next().value!)
    }
    this.countIn(client.region, -1)
    this.remote.delete(nodeId)
    this.ramping.delete(client)
    this.leaveBalancers(client)
    this.onEvent({ type: 'left', client, reason })
    return client
  }

  /**
   * The next client for `region` by the balance in force, skipping `options.exclude`, and the pool it
   * was drawn from (the task's region, or the ancestor it climbed to). If the region and everything
   * under it has no eligible client, climbs to the parent, up to global (or the boundary), unless the
   * task's routing says otherwise: a sticky key, no climbing, a pool to start from.
   */
  pick(region: string, options: PickOptions = {}): { client: Client; pool: string } | undefined {
    const { exclude } = options
    // cluster.prefer_local: this instance's own clients first, saving the hop; the others only when it has none left.
    if (options.preferLocal && this.remote.size > 0) {
      const local = this.pickIn(region, options, { has: (id: string) => this.remote.has(id) || exclude?.has(id) === true })
      if (local) return local
    }
    return this.pickIn(region, options, exclude)
  }

  private pickIn(region: string, options: PickOptions, exclude?: Excluded<string>): { client: Client; pool: string } | undefined {
    const chain = this.regions.chain(options.fromPool ?? region)
    // Past the boundary nothing is looked at, whatever fallback says: a token's regions are a limit, not a preference.
    const top = options.boundary === undefined ? chain.length : chain.indexOf(options.boundary) + 1
    const pools = options.climb === false ? Math.min(1, top) : top
    for (let at = 0; at < pools; at++) {
      const pool = chain[at]!
      const balancer = this.balancers.get(pool)
      if (!balancer) continue
      // A keyed pick looks at every client of the pool (rendezvous hashing keeps no table); others are one heap pick.
      const nodeId =
        options.key !== undefined
          ? balancer.pickByKey(options.key, exclude)
          : this.balance === 'least_request'
            ? balancer.pickLeastLoaded(this.random, exclude)
            : balancer.pick(exclude)
      if (nodeId === undefined) continue
      return { client: this.clients.get(nodeId)!, pool }
    }
    return undefined
  }

  /**
   * Moves every ramping client's share one step along its slow start (src/fleet/slow-start.ts); called on
   * the clock. A client's ramp starts when it joins or passes its trial after an ejection.
   */
  advanceRamps(now: number): void {
    for (const client of this.ramping) {
      const factor = rampFactor(now - client.recoveredAt, this.policy.slowStartMs ?? 0)
      if (factor === 1) this.ramping.delete(client)
      if (factor === client.rampFactor) continue
      client.rampFactor = factor
      this.syncBalancers(client)
      this.onEvent({ type: 'updated', client })
    }
  }

  /** A ramp's first factor: a tenth of the weight with slow start on, the whole of it without. */
  private rampStart(): number {
    return (this.policy.slowStartMs ?? 0) > 0 ? RAMP_START_FACTOR : 1
  }

  /** An attempt on `client` begins: on probation, this is its one trial, and it gets nothing else meanwhile. */
  beginAttempt(client: Client): void {
    if (!this.isCurrent(client) || !health.beginAttempt(client)) return
    this.leaveBalancers(client)
    // Out of the broadcast topics too, until the trial's result is in.
    this.onEvent({ type: 'state', client })
  }

  /** Whether the client's region is `region` or lies under it. */
  isIn(client: Client, region: string): boolean {
    return this.regions.isWithin(client.region, region)
  }

  /** Healthy, non-draining clients at or under `region` (no fallback) with a free slot: the targets of a broadcast. */
  within(region: string): Client[] {
    const found: Client[] = []
    for (const client of this.clients.values()) {
      if (this.canTakeTasks(client) && hasSlot(client) && this.regions.isWithin(client.region, region)) found.push(client)
    }
    return found
  }

  recordSuccess(client: Client, latencyMs: number, now: number): void {
    client.successes++
    client.latencyMs = client.latencyMs === 0 ? latencyMs : client.latencyMs + LATENCY_SMOOTHING * (latencyMs - client.latencyMs)
    if (!this.isCurrent(client)) {
      client.consecutiveFailures = 0
      return
    }
    const wasFailing = client.state === 'failing'
    if (!health.succeed(client, now)) return
    // A failing client never left the balancers: it keeps its share.
    if (wasFailing) {
      this.changed(client)
      return
    }
    // Back from an ejection: it ramps up again like a newcomer.
    client.rampFactor = this.rampStart()
    if (client.rampFactor < 1) this.ramping.add(client)
    this.changed(client)
  }

  /**
   * Counts a failure the client is to blame for (refused, reset, 5xx, timeout); may eject it.
   * `pool` is the region whose clients the task was drawn from: at most max_ejected_percent of
   * those may be ejected at once, so a client is kept only while it is really one of the last its
   * tasks can reach.
   */
  recordFailure(client: Client, now: number, pool = client.region): void {
    client.failures++
    // A replaced or removed record keeps its counts but must not move the node's current record out of the balancers.
    if (!this.isCurrent(client)) {
      client.consecutiveFailures++
      return
    }
    if (health.fail(client, now, this.policy, () => this.mayEject(pool))) this.changed(client)
  }

  /**
   * An attempt that says nothing of the client's health (its answer was too large, the server is
   * stopping) still ends a trial: without a verdict, so the client waits for the next task's trial
   * rather than on probation with no trial in flight, which nothing would ever end.
   */
  recordNoVerdict(client: Client): void {
    if (this.isCurrent(client) && health.noVerdict(client)) this.changed(client)
  }

  /** Ejected clients whose back-off has ended go on probation; returns them. */
  endBackoffs(now: number): Client[] {
    const recovered: Client[] = []
    for (const client of this.clients.values()) {
      if (!health.endBackoff(client, now)) continue
      this.changed(client)
      recovered.push(client)
    }
    return recovered
  }

  /** Clients of `protocol` silent for longer than `maxSilenceMs`; the caller removes or disconnects them. */
  silent(protocol: Protocol, maxSilenceMs: number, now: number): Client[] {
    const found: Client[] = []
    for (const client of this.clients.values()) {
      // Another instance's clients are its to expire: it withdraws them, or they go with it.
      if (client.instance === undefined && client.protocol === protocol && now - client.lastSeen > maxSilenceMs) found.push(client)
    }
    return found
  }

  /** Applies a reloaded hierarchy and health policy, rebuilding the balancers around the same clients. */
  reconfigure(regions: Regions, policy: HealthPolicy): void {
    this.regions = regions
    this.policy = policy
    this.balancers = new Map()
    // The counts and the seats were kept along the old hierarchy's chains.
    this.fullIn = new Map()
    for (const client of this.clients.values()) {
      client.countedFull = false
      client.seats = undefined
    }
    for (const client of this.clients.values()) this.syncBalancers(client)
  }

  /** Per region where clients registered: how many, how many can take tasks now, how many of those are failing. */
  regionCounts(): Map<string, RegionCounts> {
    const counts = new Map<string, RegionCounts>()
    for (const client of this.clients.values()) {
      const entry = counts.get(client.region) ?? { clients: 0, active: 0, failing: 0 }
      counts.set(client.region, entry)
      entry.clients++
      if (!this.canTakeTasks(client)) continue
      entry.active++
      if (client.state === 'failing') entry.failing++
    }
    return counts
  }

  private isCurrent(client: Client): boolean {
    return this.clients.get(client.nodeId) === client
  }

  /** A health state changed: the balancers and the listeners follow. */
  private changed(client: Client): void {
    this.syncBalancers(client)
    this.onEvent({ type: 'state', client })
  }

  /** Whether the client may be given a new task now (healthy or awaiting its trial, and not draining); its slots aside. */
  canTakeTasks(client: Client): boolean {
    return !isDraining(client) && health.isEligible(client)
  }

  /** Whether a pool (looked at from `region` up, as a pick climbs) has a client that could take a task but for its slots: a task there waits rather than fails. */
  fullPoolFor(region: string, climb: boolean, boundary?: string): string | undefined {
    if (this.fullIn.size === 0) return undefined
    const chain = this.regions.chain(region)
    // A token's boundary holds for waiting too: a slot freed past it must never serve the task.
    const top = boundary === undefined ? chain.length : chain.indexOf(boundary) + 1
    const pools = climb ? top : Math.min(1, top)
    // The widest such pool: a slot freed anywhere in it may serve the task, as a pick would climb to it.
    for (let at = pools - 1; at >= 0; at--) if (this.fullIn.has(chain[at]!)) return chain[at]
    return undefined
  }

  /** The pools a client serves, its own region first: where tasks waiting for its slots are queued. */
  poolsOf(client: Client): readonly string[] {
    return this.regions.chain(client.region)
  }

  private countFull(client: Client, full: boolean): void {
    if (client.countedFull === full) return
    client.countedFull = full
    for (const region of this.regions.chain(client.region)) {
      const count = (this.fullIn.get(region) ?? 0) + (full ? 1 : -1)
      if (count > 0) this.fullIn.set(region, count)
      else this.fullIn.delete(region)
    }
  }

  /** Whether one more client of `pool` (a region and everything under it) may be ejected. A scan, but only when a client reaches the failure threshold. */
  private mayEject(pool: string): boolean {
    let inPool = 0
    let ejected = 0
    for (const other of this.clients.values()) {
      if (!this.regions.isWithin(other.region, pool)) continue
      inPool++
      if (other.state === 'ejected') ejected++
    }
    return health.mayEjectAnother(inPool, ejected, this.policy)
  }

  private syncBalancers(client: Client): void {
    this.placeInBalancers(client)
    if (client.maxInFlight !== undefined || client.sharedFull === true) this.noteFull(client)
  }

  private placeInBalancers(client: Client): void {
    if (!this.canTakeTasks(client)) {
      this.leaveBalancers(client)
      return
    }
    // Room again (or a new client): tasks waiting for a slot come before anything new, as in HAProxy's server queue.
    // Healthy only: a client on probation gets its one trial through a pick.
    if (this.offerSlot !== undefined && client.state === 'healthy' && this.isCurrent(client)) {
      while (hasSlot(client) && this.offerSlot(client)) client.inFlight++
    }
    if (!hasSlot(client)) {
      this.leaveBalancers(client)
      if (this.isCurrent(client)) this.countFull(client, true)
      return
    }
    this.countFull(client, false)
    const weight = effectiveWeight(client.weight, client.rampFactor)
    if (!(weight > 0)) {
      this.leaveBalancers(client)
      return
    }
    // Seats are in the order of the chain they were taken along: the client leaves them all before its region changes, and a reload drops them all.
    const chain = this.regions.chain(client.region)
    if (client.seats) {
      for (let at = 0; at < chain.length; at++) this.balancers.get(chain[at]!)?.reweigh(client.seats[at]!, weight, client)
      return
    }
    const seats: Member<string>[] = new Array(chain.length)
    for (let at = 0; at < chain.length; at++) {
      const region = chain[at]!
      let balancer = this.balancers.get(region)
      if (!balancer) {
        balancer = new Balancer<string>()
        this.balancers.set(region, balancer)
      }
      seats[at] = balancer.join(client.nodeId, weight, client)
    }
    client.seats = seats
  }

  private leaveBalancers(client: Client): void {
    this.countFull(client, false)
    const { seats } = client
    if (!seats) return
    client.seats = undefined
    const chain = this.regions.chain(client.region)
    for (let at = 0; at < chain.length; at++) {
      const balancer = this.balancers.get(chain[at]!)
      if (!balancer) continue
      balancer.leave(seats[at]!)
      // Callers may invent region names by the thousand: an empty balancer is forgotten.
      if (balancer.size === 0) this.balancers.delete(chain[at]!)
    }
  }
}

/** Whether the client gets no new tasks by its weight: 0 as announced, or drained by an operator. */
export function isDraining(client: Client): boolean {
  return client.weight === 0 || client.operatorDrained
}

/** Why a task naming `client` cannot go to it now (it is draining, ejected, on its trial or full), as `node_unavailable` says. */
export function unavailableReason(client: Client): string {
  if (isDraining(client)) return 'draining'
  if (client.state === 'ejected') return 'ejected'
  if (client.state === 'probation') return 'on probation, its trial task under way'
  return `full (all ${client.maxInFlight} of its slots taken)`
}

/** The public JSON view of a client, as /clients and the dashboard show it. */
export function clientView(client: Client, localInstance?: string): ClientView {
  return {
    node_id: client.nodeId,
    // In a cluster: the instance that holds it.
    ...(localInstance === undefined ? {} : { instance: client.instance ?? localInstance }),
    ...(client.holderState === undefined ? {} : { holder_state: client.holderState }),
    region: client.region,
    protocol: client.protocol,
    ip: client.ip,
    // A WebSocket client has no port anyone calls: null, not a misleading 0.
    port: client.protocol === 'ws' ? null : client.port,
    weight: client.weight,
    // Only while it ramps up (slow start): the share the balancers give it now.
    ...(client.rampFactor < 1 && !isDraining(client) ? { effective_weight: effectiveWeight(client.weight, client.rampFactor) } : {}),
    state: client.state,
    draining: isDraining(client),
    ...(client.operatorDrained ? { drained_by_operator: true } : {}),
    registered_at: new Date(client.registeredAt).toISOString(),
    last_seen: new Date(client.lastSeen).toISOString(),
    in_flight: client.inFlight,
    ...(client.maxInFlight === undefined ? {} : { max_in_flight: client.maxInFlight }),
    successes: client.successes,
    failures: client.failures,
    consecutive_failures: client.consecutiveFailures,
    latency_ms: Math.round(client.latencyMs * 10) / 10,
    ejected_until: client.state === 'ejected' ? new Date(client.ejectedUntil).toISOString() : null,
  }
}
