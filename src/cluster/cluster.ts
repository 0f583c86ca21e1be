import type { Clock } from '../clock.ts'
import type { Client, Registry, RegistryEvent } from '../fleet/registry.ts'
import type { Log } from '../observe/logger.ts'
import type { Deadline, DeadlineTimer } from '../tasks/deadlines.ts'
import type { SlotQueue } from '../tasks/slot-waiting.ts'
import type { Transport } from '../transports/types.ts'
import { ClusterKeys } from './keys.ts'
import {
  announcementOf,
  type FleetMessage,
  fleetMessageSchema,
  type InstanceInfo,
  instanceInfoSchema,
  readMessage,
  relayMembers,
  type SharedClient,
  share,
  sharedClientSchema,
} from './messages.ts'
import { RedisConnection, redactRedisUrl } from './redis-connection.ts'
import { deliverRelayed, RelayReplies, RelayTransport } from './relay.ts'
import { cameBackEmpty, configValue, type RedisSettings, riskySettings } from './store-checks.ts'

/** An instance as the others see it: src/cluster/messages.ts instanceInfoSchema. */
export type { InstanceInfo }

export interface ClusterSettings {
  redisUrl: string
  instanceId: string
  keyPrefix: string
  instanceTtlMs: number
  /** A Redis command not answered within this makes Redis count as lost (cluster.command_timeout). */
  commandTimeoutMs: number
  advertiseUrl: string
  /** cluster.relay_batch: gather relayed tasks (and their answers) per instance per turn, with the instances that read them. */
  relayBatch: boolean
}

export interface ClusterDeps {
  settings: ClusterSettings
  registry: Registry
  clock: Clock
  deadlines: DeadlineTimer
  /** How a relayed task reaches a WebSocket agent of this instance. */
  localWs: Transport
  /** Where a relayed task waits while its agent's slots are all taken here. */
  slots: SlotQueue
  /** Clients held here and tasks in flight, for the presence key. */
  load: () => { clients: number; inFlight: number }
  /** Writes the tasks running here back into a Redis that came back empty; the ids written. */
  restoreTasks: () => Promise<string[]>
  log: Log
}

/** Start-up refused: another running instance has this instance_id. */
export class ClusterConflictError extends Error {
  override name = 'ClusterConflictError'
}

/**
 * Several instances as one system through Redis. Each instance announces the clients it holds and
 * keeps a live replica of everyone else's in its own registry (as remote clients), so balancing,
 * /clients and the dashboard see the whole fleet. An instance's presence key expires when it stops
 * refreshing it: the others then drop its clients and fail over what they relayed to it. With
 * Redis gone, each instance goes on with what it holds and the HTTP agents it knows, and rebuilds
 * the shared view when Redis is back (also a Redis that restarted empty).
 */
export class Cluster {
  readonly keys: ClusterKeys
  readonly relay: RelayTransport
  readonly replies: RelayReplies
  readonly connection: RedisConnection
  private readonly incarnation = crypto.randomUUID()
  private readonly startedAt: string
  /** The other instances, as last seen. */
  private instances = new Map<string, InstanceInfo>()
  private starting = true
  /** Set once this process has claimed its id; never unset, so reconnections keep delivering to the agents it holds. */
  private claimed = false
  private stopped = false
  /** Withdrawn by a graceful stop: from then on this instance neither refreshes nor announces anything, so it cannot rejoin during its grace period. */
  private withdrawn = false
  private cancelTicks: (() => void) | undefined
  private ticking = false
  /** The marker key's value as last read: Redis lost its data when it is gone or changed. */
  private marker: string | undefined
  /** Tasks relayed here being delivered to agents held here, by task id, with their deadlines. */
  private readonly deliveries = new Map<string, { taskId: string; deadline: Deadline }>()
  /** Whether a WebSocket agent held here still answers: the gateway's ping, set once it is built (src/server/edge-wiring.ts). */
  isAliveHere: (nodeId: string) => Promise<boolean> = async () => false

  constructor(private readonly deps: ClusterDeps) {
    const { settings } = deps
    this.keys = new ClusterKeys(settings.keyPrefix)
    this.startedAt = new Date(deps.clock.now()).toISOString()
    this.connection = new RedisConnection(settings.redisUrl, deps.clock, settings.commandTimeoutMs, {
      up: () => this.onUp(),
      down: (reason) => this.onDown(reason),
    })
    const batches = settings.relayBatch
    this.relay = new RelayTransport(
      this.connection,
      this.keys,
      () => this.deps.settings.instanceId,
      (instance) => this.instances.get(instance),
      batches,
    )
    this.replies = new RelayReplies(this.connection, this.keys)
    // A WebSocket agent held here filled up or has room again: the others skip it, or may send again.
    // (An HTTP agent's fullness is each instance's own: they call it directly, each within its share.)
    deps.registry.watchFull((client) => {
      if (client.route === 'ws') this.onRegistryEvent({ type: 'updated', client })
    })
  }

  get instanceId(): string {
    return this.deps.settings.instanceId
  }

  get redisUp(): boolean {
    return this.connection.up
  }

  /** Why Redis counts as lost, while it does. */
  get redisDownReason(): string | undefined {
    return this.connection.downReason
  }

  /** Connects and claims this instance's id; throws ClusterConflictError if a running instance has it. Redis down: starts degraded. */
  async start(): Promise<void> {
    await this.connection.subscribe(this.keys.fleet, (message) => this.onFleet(message))
    const holder = {
      connection: this.connection,
      keys: this.keys,
      registry: this.deps.registry,
      local: this.deps.localWs,
      deadlines: this.deps.deadlines,
      slots: this.deps.slots,
      replies: this.replies,
      batches: this.deps.settings.relayBatch,
      deliveries: this.deliveries,
      isAlive: (nodeId: string) => this.isAliveHere(nodeId),
    }
    // With batches off, this instance reads one message as one task or reply, as older versions do (a batch is dropped as unreadable).
    const { batches } = holder
    await this.connection.subscribe(this.keys.relay(this.instanceId), (message) => {
      // Subscribed before the id is claimed: a twin that is about to be refused must not answer, wrongly,
      // "no longer connected" for the running instance's agents (the origin would retry, the agent run it twice).
      if (!this.claimed) return
      if (!batches) void deliverRelayed(holder, message)
      else for (const member of relayMembers(message)) void deliverRelayed(holder, member)
    })
    await this.connection.subscribe(this.keys.reply(this.instanceId), (message) => {
      if (batches) this.relay.onMessage(message)
      else this.relay.onReply(message)
    })
    // A few refreshes per instance_ttl: refreshed only once per TTL, the key would lapse whenever a timer
    // ran late, and the others would drop this live instance's clients until it claimed its id again.
    // Running before the claim, so that the first refresh follows it within one period, however long the
    // rest of the start (loading every other instance's clients) takes.
    const everyMs = Math.min(MAX_TICK_EVERY_MS, Math.floor(this.deps.settings.instanceTtlMs / REFRESHES_PER_TTL))
    this.cancelTicks = this.deps.clock.every(everyMs, () => void this.tick())
    try {
      await this.connection.start()
    } finally {
      this.starting = false
    }
    if (this.conflict) {
      this.cancelTicks()
      this.connection.close()
      throw new ClusterConflictError(this.conflict)
    }
  }

  private conflict: string | undefined

  /** The other instances, for /cluster. */
  peers(): InstanceInfo[] {
    return [...this.instances.values()]
  }

  /** This instance's own line, as the others see it. */
  selfInfo(): InstanceInfo {
    const { clients, inFlight } = this.deps.load()
    return {
      instance_id: this.instanceId,
      incarnation: this.incarnation,
      advertise_url: this.deps.settings.advertiseUrl,
      started_at: this.startedAt,
      clients,
      in_flight: inFlight,
      refreshed_at: new Date(this.deps.clock.now()).toISOString(),
      ...(this.deps.settings.relayBatch ? { relay_batch: true } : {}),
      ...(this.withdrawn ? { stopping: true } : {}),
    }
  }

  /** Tasks relayed here from other instances that are being delivered to agents held here: a graceful stop waits for them too. */
  get delivering(): number {
    return this.deliveries.size
  }

  /** What to say where the Redis URL appears. */
  get redisUrl(): string {
    return redactRedisUrl(this.deps.settings.redisUrl)
  }

  /**
   * Whether another instance's WebSocket agent still answers there: its holder pings it. A node id held
   * by a live agent elsewhere is refused to a newcomer here (409 node_id_in_use), as it is at its holder.
   */
  isAlive(client: Client): Promise<boolean> {
    if (client.instance === undefined || !this.instances.has(client.instance)) return Promise.resolve(false)
    return this.relay.probe(client.instance, client.nodeId, PROBE_TIMEOUT_MS)
  }

  /**
   * A cancelled task that another instance relayed here ends its delivery now, as its deadline would:
   * the agent's slot frees at once (an agent told to cancel may never answer), and the origin, whose
   * own attempt the cancel ended, drops the reply. Nothing when the task is not delivered here.
   */
  cancelDelivery(taskId: string): void {
    // Cancels are rare, and deliveries few: a scan, rather than a second index kept per task.
    for (const delivery of [...this.deliveries.values()]) if (delivery.taskId === taskId) delivery.deadline.fire()
  }

  /** Publishes a change to a client this instance holds. */
  onRegistryEvent(event: RegistryEvent): void {
    const { client } = event
    // Not before this process has claimed its id: announced before its reset, a client would be taken for the previous run's.
    if (client.instance !== undefined || !this.connection.up || !this.claimed || this.withdrawn) return
    const { keys } = this
    const id = this.instanceId
    if (event.type === 'left') {
      void this.connection.send('HDEL', [keys.clients(id), client.nodeId]).catch(() => undefined)
      void this.publish({ instance: id, op: 'del', node_id: client.nodeId })
      return
    }
    const shared = share(client)
    void this.connection.send('HSET', [keys.clients(id), client.nodeId, JSON.stringify(shared)]).catch(() => undefined)
    void this.publish({ instance: id, op: 'set', client: shared })
  }

  /** Several times per instance_ttl (at least once a second): refresh this instance's presence, and drop the instances whose presence expired. */
  private async tick(): Promise<void> {
    // A tick still waiting on a slow Redis is not overtaken by the next one.
    if (!this.connection.up || !this.claimed || this.stopped || this.ticking) return
    this.ticking = true
    try {
      await this.refreshPresence()
      // Withdrawn, it stays present through its grace period (the others wait for what they relayed here) and looks at nothing else.
      if (this.withdrawn) return
      const live = await this.liveInstances()
      for (const id of [...this.instances.keys()]) if (!live.has(id)) this.dropInstance(id, `instance ${id} stopped refreshing its presence`)
      // A stopping instance is out of the fleet but still answers what was relayed to it, while it is present.
      for (const holder of [...this.relay.waitedOn()])
        if (!live.has(holder)) this.relay.failHolder(holder, `instance ${holder} stopped refreshing its presence`)
      for (const [id, info] of live) {
        if (id === this.instanceId) continue
        if (info.stopping === true) this.leaveFleet(id, `instance ${id} is stopping`)
        else if (this.note(id, info)) await this.loadInstance(id)
      }
      this.countInstances()
    } catch (error) {
      this.deps.log(`[mls] cluster: housekeeping failed: ${(error as Error).message}`)
    } finally {
      this.ticking = false
    }
  }

  /**
   * A graceful stop begins: this instance's clients leave the cluster at once, so the others send them
   * nothing new. Its presence stays through the grace period: a task another instance relayed here
   * before is finished here and answered, not failed over and run a second time elsewhere.
   */
  async withdraw(): Promise<void> {
    if (this.stopped || this.withdrawn) return
    // Set even while Redis is down: back during the grace period, it must not bring this instance back.
    this.withdrawn = true
    if (!this.connection.up) return
    const id = this.instanceId
    try {
      await this.connection.send('DEL', [this.keys.clients(id)])
      // Present still, as stopping: an instance that reads the presences now does not take it for a live one.
      await this.refreshPresence()
      await this.publish({ instance: id, op: 'gone' })
    } catch {
      // Redis is gone already: the others notice when the presence key expires.
    }
  }

  /** The grace period is over: the presence goes, and the others fail over at once whatever they still relayed here. */
  async leave(): Promise<void> {
    if (this.stopped || !this.claimed || !this.connection.up) return
    const id = this.instanceId
    try {
      await this.connection.send('EVAL', [DELETE_IF_OURS, '1', this.keys.instance(id), this.incarnation])
      await this.publish({ instance: id, op: 'stopped' })
    } catch {
      // Redis is gone: the others notice when the presence key expires.
    }
  }

  stop(): void {
    this.stopped = true
    this.cancelTicks?.()
    this.relay.failAll('the server is stopping')
    this.connection.close()
  }

  private async onUp(): Promise<void> {
    if (this.withdrawn) return
    if (!(await this.claimPresence())) return
    this.claimed = true
    this.deps.log(`[mls] cluster: connected to ${this.redisUrl} as ${this.instanceId}`)
    await this.checkSettings()
    await this.checkMarker()
    // Announce everything held here afresh: Redis may have restarted empty.
    const id = this.instanceId
    const mine: string[] = []
    for (const client of this.deps.registry.all()) if (client.instance === undefined) mine.push(client.nodeId, JSON.stringify(share(client)))
    await this.connection.send('DEL', [this.keys.clients(id)])
    if (mine.length > 0) await this.connection.send('HSET', [this.keys.clients(id), ...mine])
    await this.connection.send('PEXPIRE', [this.keys.clients(id), String(this.deps.settings.instanceTtlMs * 3)])
    await this.publish({ instance: id, op: 'reset', incarnation: this.incarnation, started_at: this.startedAt })
    // And rebuild the replica of everyone else's: no ghost of an instance that died meanwhile.
    const live = await this.liveInstances()
    for (const other of [...this.instances.keys()]) if (!live.has(other)) this.dropInstance(other, `instance ${other} is gone`)
    for (const [other, info] of live) {
      if (other === id || info.stopping === true) continue
      this.note(other, info)
      await this.loadInstance(other)
    }
    this.countInstances()
  }

  private onDown(reason: string): void {
    this.deps.log(`[mls] cluster: ${reason}; serving the agents held here and the HTTP agents known, until Redis is back`, { level: 'warn' })
    // Another instance's WebSocket agents are reachable only through Redis; its HTTP agents are called directly.
    for (const client of [...this.deps.registry.all()]) {
      if (client.route === 'relay') this.deps.registry.remove(client.nodeId, 'the cluster store is down')
    }
    this.relay.failAll('the cluster store went down before the answer came back')
  }

  /** Says, once per connection, which of Redis's settings would lose async tasks (it cannot be told from outside otherwise). */
  private async checkSettings(): Promise<void> {
    let settings: RedisSettings
    try {
      const read = async (name: string) => configValue(await this.connection.send('CONFIG', ['GET', name]), name)
      settings = { appendonly: await read('appendonly'), save: await read('save'), maxmemoryPolicy: await read('maxmemory-policy') }
    } catch (error) {
      if (!this.connection.up) throw error
      // A managed Redis or an ACL user may refuse CONFIG: the risks are named all the same.
      this.deps.log(
        `[mls] cluster: cannot read the settings of Redis at ${this.redisUrl} (${(error as Error).message}): async tasks survive a Redis restart only with appendonly yes, and memory pressure only with maxmemory-policy noeviction; check both`,
        { level: 'warn' },
      )
      return
    }
    for (const risk of riskySettings(settings, this.redisUrl)) this.deps.log(`[mls] cluster: ${risk}`, { level: 'warn' })
  }

  /** Sets the marker key if it is missing; if this instance had read another value (or any), Redis lost its data meanwhile. */
  private async checkMarker(): Promise<void> {
    const key = this.keys.marker
    const fresh = crypto.randomUUID()
    const set = await this.connection.send('SET', [key, fresh, 'NX'])
    const current = set === null ? String(await this.connection.send('GET', [key])) : fresh
    const lost = this.marker !== undefined && current !== this.marker
    this.marker = current
    if (!lost) return
    const restored = await this.deps.restoreTasks()
    this.deps.log(`[mls] cluster: ${cameBackEmpty(this.redisUrl, key, restored)}`, { level: 'warn' })
  }

  /** SET NX the presence key; at start-up a fresh one of another incarnation means another instance has this id. */
  private async claimPresence(): Promise<boolean> {
    const key = this.keys.instance(this.instanceId)
    const ttl = String(this.deps.settings.instanceTtlMs)
    const set = await this.connection.send('SET', [key, JSON.stringify(this.selfInfo()), 'NX', 'PX', ttl])
    if (set !== null) return true
    const current = await this.connection.send('GET', [key])
    const holder = typeof current === 'string' ? readMessage(instanceInfoSchema, current) : undefined
    if (holder?.incarnation === this.incarnation) return true
    const message = `instance_id "${this.instanceId}" is already in use by another running instance (advertised at ${holder?.advertise_url ?? '?'}); give each instance its own cluster.instance_id, or, if that one was just stopped, wait for it to finish (its grace period${holder?.stopping === true ? ', now under way' : ''}) and ${this.deps.settings.instanceTtlMs / 1000} s more`
    if (this.starting) this.conflict = message
    else this.deps.log(`[mls] cluster: ${message}`)
    return false
  }

  private async refreshPresence(): Promise<void> {
    const key = this.keys.instance(this.instanceId)
    const ttl = String(this.deps.settings.instanceTtlMs)
    const refreshed = await this.connection.send('EVAL', [REFRESH_IF_OURS, '1', key, this.incarnation, JSON.stringify(this.selfInfo()), ttl])
    // The key is gone (Redis restarted empty, or it expired while this process was stalled): claim it again.
    if (refreshed === 0 && !this.withdrawn) await this.onUp()
    await this.connection.send('PEXPIRE', [this.keys.clients(this.instanceId), String(this.deps.settings.instanceTtlMs * 3)])
  }

  private async liveInstances(): Promise<Map<string, InstanceInfo>> {
    const live = new Map<string, InstanceInfo>()
    let cursor = '0'
    do {
      const [next, keys] = (await this.connection.send('SCAN', [cursor, 'MATCH', this.keys.instancePattern, 'COUNT', '200'])) as [string, string[]]
      cursor = next
      if (keys.length > 0) {
        const values = (await this.connection.send('MGET', keys)) as Array<string | null>
        for (let i = 0; i < values.length; i++) {
          const value = values[i]
          // Not an instance's presence (another shape, or under another id's key): not read as one.
          const info = typeof value === 'string' ? readMessage(instanceInfoSchema, value) : undefined
          if (info !== undefined && keys[i] === this.keys.instance(info.instance_id)) live.set(info.instance_id, info)
        }
      }
    } while (cursor !== '0')
    return live
  }

  /** Replaces the replica of one instance's clients with what its hash holds now. */
  private async loadInstance(id: string): Promise<void> {
    const entries = (await this.connection.send('HGETALL', [this.keys.clients(id)])) as Record<string, string> | null
    const held = new Set<string>()
    for (const [nodeId, json] of Object.entries(entries ?? {})) {
      // A malformed entry is skipped, not fatal.
      const shared = readMessage(sharedClientSchema, json)
      if (shared === undefined) continue
      this.applyShared(id, shared)
      held.add(nodeId)
    }
    for (const client of [...this.deps.registry.all()]) {
      if (client.instance === id && !held.has(client.nodeId)) this.deps.registry.remove(client.nodeId, `no longer held by instance ${id}`)
    }
  }

  private onFleet(text: string): void {
    // Checked whole before it is read: `null` or a half-written record would otherwise throw here and end the process.
    const message = readMessage(fleetMessageSchema, text)
    if (message === undefined || message.instance === this.instanceId) return
    switch (message.op) {
      case 'set':
        if (!this.instances.has(message.instance)) {
          // A newcomer: the next tick reads its presence; its clients count already.
          this.instances.set(message.instance, { instance_id: message.instance } as InstanceInfo)
          this.countInstances()
        }
        this.applyShared(message.instance, message.client)
        return
      case 'del': {
        const client = this.deps.registry.get(message.node_id)
        if (client?.instance === message.instance) this.deps.registry.remove(message.node_id, `left instance ${message.instance}`)
        return
      }
      case 'reset':
        if (message.incarnation !== undefined && message.started_at !== undefined)
          this.note(message.instance, { instance_id: message.instance, incarnation: message.incarnation, started_at: message.started_at } as InstanceInfo)
        void this.loadInstance(message.instance).catch(() => undefined)
        return
      case 'gone':
        this.leaveFleet(message.instance, `instance ${message.instance} is stopping`)
        return
      case 'stopped':
        this.dropInstance(message.instance, `instance ${message.instance} stopped`)
        return
    }
  }

  private applyShared(instance: string, shared: SharedClient): void {
    const { registry, clock } = this.deps
    const existing = registry.get(shared.node_id)
    // This instance's own client of that id wins here; the other instance sees its own.
    if (existing && existing.instance === undefined) return
    const now = clock.now()
    const { client } = registry.announce(announcementOf(instance, shared), now)
    // Health is judged by each instance from what it sees: the holder's verdict is shown beside this one's.
    client.holderState = shared.state
    // An operator's ejection at the holder is not a verdict but an order: it holds here too.
    if (shared.ejected_until !== undefined) registry.ejectAsHolderSays(client.nodeId, now, shared.ejected_until)
  }

  /** An HTTP agent's slots are shared among the live instances (src/fleet/slots.ts httpSlotShare). */
  private countInstances(): void {
    this.deps.registry.setInstanceCount(this.instances.size + 1)
  }

  /**
   * Records what an instance's presence (or its reset) says; true if it is new here. An id seen
   * before under another incarnation is a process that died and was started again before its
   * presence expired: what was relayed to the dead one fails over now, as when its presence
   * expires, not at each task's deadline (the new one never heard of those tasks).
   */
  private note(id: string, info: InstanceInfo): boolean {
    const known = this.instances.get(id)
    const restarted = known?.incarnation !== undefined && info.incarnation !== known.incarnation
    // Another run that started before the one known is a stale read (a presence read before the new
    // run's reset came, while the old key still lived): not taken, nor taken for a restart.
    if (restarted && !(info.started_at > (known.started_at ?? ''))) return false
    if (restarted) this.dropInstance(id, `instance ${id} restarted`)
    const isNew = restarted || known === undefined
    // What a reset says (the run alone) does not replace a presence read whole.
    if (isNew || info.refreshed_at !== undefined || known.refreshed_at === undefined) this.instances.set(id, info)
    if (isNew) this.countInstances()
    return isNew
  }

  /**
   * A graceful stop began there: out of the fleet (its clients take nothing new), but what was relayed
   * to it is still answered, until its 'stopped' or its presence lapses.
   */
  private leaveFleet(id: string, why: string): void {
    // Left already (its clients come only with it: src/cluster/cluster.ts applyShared and loadInstance).
    if (!this.instances.delete(id)) return
    this.countInstances()
    for (const client of [...this.deps.registry.all()]) if (client.instance === id) this.deps.registry.remove(client.nodeId, why)
  }

  /** Gone (its presence lapsed, it stopped, it restarted): out of the fleet, and what was relayed to it fails over now. */
  private dropInstance(id: string, why: string): void {
    this.relay.failHolder(id, why)
    this.leaveFleet(id, why)
  }

  private publish(message: FleetMessage): Promise<unknown> {
    return this.connection.publish(this.keys.fleet, JSON.stringify(message)).catch(() => undefined)
  }
}

/** How long the holder has to answer a probe: its own ping waits 1.5 s (src/ws/gateway.ts), then Redis both ways. */
const PROBE_TIMEOUT_MS = 3000
/** How many times the presence is refreshed within one instance_ttl. */
const REFRESHES_PER_TTL = 3
/** The longest wait between two refreshes: also how late a dead instance may be noticed after its presence expired. */
const MAX_TICK_EVERY_MS = 1000

/** Refreshes the presence key only if this incarnation holds it: a restarted twin must not be refreshed by the old one. */
const REFRESH_IF_OURS = `
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, info = pcall(cjson.decode, current)
if not ok or info.incarnation ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`

const DELETE_IF_OURS = `
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, info = pcall(cjson.decode, current)
if ok and info.incarnation == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`
