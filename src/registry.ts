import { Balancer } from './balancer.ts'
import type { RegionCounts, Regions } from './regions.ts'

export type Protocol = 'http' | 'ws'
/** healthy: takes tasks; ejected: skipped until its back-off ends; probation: one trial task decides. */
export type HealthState = 'healthy' | 'ejected' | 'probation'

export interface Client {
  nodeId: string
  region: string
  protocol: Protocol
  ip: string
  port: number
  /** 0 drains the client: it keeps its tasks but gets no new ones. */
  weight: number
  /** Changes each time the node registers again, so a stale connection cannot remove the new one. */
  connectionId: number
  state: HealthState
  registeredAt: number
  lastSeen: number
  inFlight: number
  successes: number
  failures: number
  consecutiveFailures: number
  ejections: number
  ejectedUntil: number
  /** When it last came back from an ejection; a long healthy run forgives old ejections. */
  recoveredAt: number
  trialInFlight: boolean
  /** Exponentially weighted mean of answered attempts, in ms; 0 until the first answer. */
  latencyMs: number
}

export interface ClientAnnouncement {
  nodeId: string
  region: string
  protocol: Protocol
  ip: string
  port: number
  weight: number
}

export interface HealthPolicy {
  failuresToEject: number
  ejectionMs: number
  maxEjectionMs: number
  maxEjectedPercent: number
}

export type RegistryEvent =
  | { type: 'joined' | 'updated' | 'state'; client: Client }
  | { type: 'left'; client: Client; reason: string }

const LATENCY_SMOOTHING = 0.2

/**
 * Every known client, its health, and one balancer per region. A client sits in the balancer of its
 * own region and of every ancestor, so picking for any region costs one balancer pick, not a scan.
 * Pure: time comes in as `now` (ms); events go out through `onEvent`.
 */
export class Registry {
  /** New node ids past this many clients are refused (`hasRoomFor`): a flood of ids must not grow the server without bound. */
  maxClients = Number.POSITIVE_INFINITY
  private readonly clients = new Map<string, Client>()
  /** Only regions with a client that can take tasks have one; a region's last client leaving forgets it. */
  private balancers = new Map<string, Balancer<string>>()
  private nextConnectionId = 1

  constructor(
    private regions: Regions,
    private health: HealthPolicy,
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

  /** How many regions have balancer state now: bounded by where clients are, not by every name ever seen. */
  get trackedRegions(): number {
    return this.balancers.size
  }

  all(): IterableIterator<Client> {
    return this.clients.values()
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
      (announcement.protocol === 'ws'
        ? existing.connectionId === connectionId
        : existing.ip === announcement.ip && existing.port === announcement.port)
    if (existing && sameClient) {
      existing.lastSeen = now
      if (existing.region !== announcement.region || existing.weight !== announcement.weight) {
        this.leaveBalancers(existing)
        existing.region = announcement.region
        existing.weight = announcement.weight
        this.syncBalancers(existing)
        this.onEvent({ type: 'updated', client: existing })
      }
      return { client: existing }
    }
    // A new client, or a node that came back on another connection/address: a fresh record.
    if (existing) this.leaveBalancers(existing)
    const client: Client = {
      ...announcement,
      connectionId: this.nextConnectionId++,
      state: 'healthy',
      registeredAt: now,
      lastSeen: now,
      inFlight: 0,
      successes: existing?.successes ?? 0,
      failures: existing?.failures ?? 0,
      consecutiveFailures: 0,
      ejections: 0,
      ejectedUntil: 0,
      recoveredAt: now,
      trialInFlight: false,
      latencyMs: existing?.latencyMs ?? 0,
    }
    this.clients.set(client.nodeId, client)
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

  /** Removes a client; with `connectionId`, only if that connection is still the current one. */
  remove(nodeId: string, reason: string, connectionId?: number): Client | undefined {
    const client = this.clients.get(nodeId)
    if (!client || (connectionId !== undefined && client.connectionId !== connectionId)) return undefined
    this.clients.delete(nodeId)
    this.leaveBalancers(client)
    this.onEvent({ type: 'left', client, reason })
    return client
  }

  /**
   * The next client for `region` by weighted round-robin, skipping `exclude`. If the region and
   * everything under it has no eligible client, climbs to the parent, up to global.
   */
  pick(region: string, exclude?: ReadonlySet<string>): Client | undefined {
    return this.pickFrom(region, exclude)?.client
  }

  /** pick(), also saying which region's pool the client was drawn from (the task's region, or the ancestor it climbed to). */
  pickFrom(region: string, exclude?: ReadonlySet<string>): { client: Client; pool: string } | undefined {
    for (const pool of this.regions.chain(region)) {
      const nodeId = this.balancers.get(pool)?.pick(exclude)
      if (nodeId === undefined) continue
      const client = this.clients.get(nodeId)!
      if (client.state === 'probation') {
        // One trial task at a time decides whether it is healthy again.
        client.trialInFlight = true
        this.leaveBalancers(client)
        // Out of the broadcast topics too, until the trial's result is in.
        this.onEvent({ type: 'state', client })
      }
      return { client, pool }
    }
    return undefined
  }

  /** Healthy, non-draining clients at or under `region` (no fallback): the targets of a broadcast. */
  within(region: string): Client[] {
    const found: Client[] = []
    for (const client of this.clients.values()) {
      if (this.canTakeTasks(client) && this.regions.isWithin(client.region, region)) found.push(client)
    }
    return found
  }

  recordSuccess(client: Client, latencyMs: number, now: number): void {
    client.successes++
    client.consecutiveFailures = 0
    client.latencyMs = client.latencyMs === 0 ? latencyMs : client.latencyMs + LATENCY_SMOOTHING * (latencyMs - client.latencyMs)
    if (!this.isCurrent(client)) return
    if (client.state !== 'healthy') {
      client.state = 'healthy'
      client.trialInFlight = false
      client.recoveredAt = now
      this.syncBalancers(client)
      this.onEvent({ type: 'state', client })
    }
  }

  /**
   * Counts a failure the client is to blame for (refused, reset, 5xx, timeout); may eject it.
   * `pool` is the region whose clients the task was drawn from: at most max_ejected_percent of
   * those may be ejected at once, so a client is kept only while it is really one of the last its
   * tasks can reach.
   */
  recordFailure(client: Client, now: number, pool = client.region): void {
    client.failures++
    client.consecutiveFailures++
    // A replaced or removed record keeps its counts but must not move the node's current record out of the balancers.
    if (!this.isCurrent(client) || client.state === 'ejected') return
    const failedTrial = client.state === 'probation'
    if (!failedTrial && client.consecutiveFailures < this.health.failuresToEject) return
    if (!failedTrial && !this.mayEject(pool)) return
    // A client healthy for longer than the longest back-off starts over; a failed trial never does.
    if (!failedTrial && now - client.recoveredAt > this.health.maxEjectionMs) client.ejections = 0
    client.ejections++
    const backoffMs = Math.min(this.health.maxEjectionMs, this.health.ejectionMs * 2 ** (client.ejections - 1))
    client.state = 'ejected'
    client.trialInFlight = false
    client.ejectedUntil = now + backoffMs
    this.leaveBalancers(client)
    this.onEvent({ type: 'state', client })
  }

  /**
   * An attempt that says nothing of the client's health (its answer was too large, the server is
   * stopping) still ends a trial: without a verdict, so the client waits for the next task's trial
   * rather than on probation with no trial in flight, which nothing would ever end.
   */
  recordNoVerdict(client: Client): void {
    if (!this.isCurrent(client) || client.state !== 'probation' || !client.trialInFlight) return
    client.trialInFlight = false
    this.syncBalancers(client)
    this.onEvent({ type: 'state', client })
  }

  /** Ejected clients whose back-off has ended go on probation; returns them. */
  endBackoffs(now: number): Client[] {
    const recovered: Client[] = []
    for (const client of this.clients.values()) {
      if (client.state !== 'ejected' || client.ejectedUntil > now) continue
      client.state = 'probation'
      this.syncBalancers(client)
      this.onEvent({ type: 'state', client })
      recovered.push(client)
    }
    return recovered
  }

  /** Clients of `protocol` silent for longer than `maxSilenceMs`; the caller removes or disconnects them. */
  silent(protocol: Protocol, maxSilenceMs: number, now: number): Client[] {
    const found: Client[] = []
    for (const client of this.clients.values()) {
      if (client.protocol === protocol && now - client.lastSeen > maxSilenceMs) found.push(client)
    }
    return found
  }

  /** Applies a reloaded hierarchy and health policy, rebuilding the balancers around the same clients. */
  reconfigure(regions: Regions, health: HealthPolicy): void {
    this.regions = regions
    this.health = health
    this.balancers = new Map()
    for (const client of this.clients.values()) this.syncBalancers(client)
  }

  /** Per region where clients registered: how many, and how many can take tasks now. */
  regionCounts(): Map<string, RegionCounts> {
    const counts = new Map<string, RegionCounts>()
    for (const client of this.clients.values()) {
      const entry = counts.get(client.region) ?? { clients: 0, active: 0 }
      entry.clients++
      if (this.canTakeTasks(client)) entry.active++
      counts.set(client.region, entry)
    }
    return counts
  }

  private isCurrent(client: Client): boolean {
    return this.clients.get(client.nodeId) === client
  }

  /** Whether the client may be given a new task now (healthy or awaiting its trial, and not draining). */
  canTakeTasks(client: Client): boolean {
    return client.weight > 0 && (client.state === 'healthy' || (client.state === 'probation' && !client.trialInFlight))
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
    return ejected + 1 <= Math.floor((inPool * this.health.maxEjectedPercent) / 100)
  }

  private syncBalancers(client: Client): void {
    if (!this.canTakeTasks(client)) {
      this.leaveBalancers(client)
      return
    }
    for (const region of this.regions.chain(client.region)) {
      let balancer = this.balancers.get(region)
      if (!balancer) {
        balancer = new Balancer<string>()
        this.balancers.set(region, balancer)
      }
      balancer.set(client.nodeId, client.weight)
    }
  }

  private leaveBalancers(client: Client): void {
    for (const region of this.regions.chain(client.region)) {
      const balancer = this.balancers.get(region)
      if (!balancer) continue
      balancer.remove(client.nodeId)
      // Callers may invent region names by the thousand: an empty balancer is forgotten.
      if (balancer.size === 0) this.balancers.delete(region)
    }
  }
}

/** The public JSON view of a client, as /clients and the dashboard show it. */
export function clientView(client: Client) {
  return {
    node_id: client.nodeId,
    region: client.region,
    protocol: client.protocol,
    ip: client.ip,
    port: client.port,
    weight: client.weight,
    state: client.state,
    draining: client.weight === 0,
    registered_at: new Date(client.registeredAt).toISOString(),
    last_seen: new Date(client.lastSeen).toISOString(),
    in_flight: client.inFlight,
    successes: client.successes,
    failures: client.failures,
    consecutive_failures: client.consecutiveFailures,
    latency_ms: Math.round(client.latencyMs * 10) / 10,
    ejected_until: client.state === 'ejected' ? new Date(client.ejectedUntil).toISOString() : null,
  }
}
export type ClientView = ReturnType<typeof clientView>
