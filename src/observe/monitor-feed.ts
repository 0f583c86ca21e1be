import type { Clock } from '../clock.ts'
import type { Membership } from '../fleet/membership.ts'
import type { Regions } from '../fleet/regions.ts'
import type { Client, RegistryEvent } from '../fleet/registry.ts'
import type { MonitorFrame, MonitorSnapshot, MonitorUpdate, StatusLine } from '../wire/monitor.ts'
import { type TaskRecord, type TaskStats, taskView } from './task-stats.ts'

export const MONITOR_TOPIC = 'monitor'

/** Tasks per batch beyond which the dashboard gets a sample, not every task: the counts stay exact in the series. */
const MAX_TASKS_PER_BATCH = 50

export interface MonitorFeedDeps {
  membership: Membership
  regions: () => Regions
  stats: TaskStats
  statusLine: () => StatusLine
  clock: Clock
  /** Sends one message to every dashboard (Bun's server.publish on the monitor topic). */
  publish: (topic: string, message: string) => void
}

/** A dashboard's socket, as far as the feed needs it. */
export interface FeedSocket {
  subscribe(topic: string): void
  send(message: string): unknown
}

/**
 * The dashboards' live feed: a snapshot when one joins, then batches of what changed, so a server
 * doing thousands of tasks a second sends a few small messages a second, not one per task. Clients
 * are collected as "dirty" ids: a client touched by a hundred tasks appears once per batch. Nobody
 * watching, nothing is collected.
 */
export class MonitorFeed {
  private readonly dirty = new Map<string, Client>()
  private removed: NonNullable<MonitorUpdate['removed']> = []
  private tasks: TaskRecord[] = []
  private watchers = 0

  constructor(private readonly deps: MonitorFeedDeps) {}

  get watching(): boolean {
    return this.watchers > 0
  }

  /** A dashboard joins (or asks again): it gets a fresh snapshot, then every batch. */
  join(socket: FeedSocket, alreadyWatching: boolean): void {
    if (!alreadyWatching) {
      socket.subscribe(MONITOR_TOPIC)
      this.watchers++
    }
    socket.send(frame({ type: 'monitor_ok', payload: this.snapshot() }))
  }

  /** A dashboard left; when the last one goes, what it did not get is dropped: the next one starts from a snapshot. */
  leave(): void {
    if (--this.watchers === 0) this.takeBatch()
  }

  onRegistryEvent(event: RegistryEvent): void {
    if (!this.watching) return
    if (event.type === 'left') {
      this.dirty.delete(event.client.nodeId)
      this.removed.push({ node_id: event.client.nodeId, reason: event.reason })
    } else {
      this.dirty.set(event.client.nodeId, event.client)
    }
  }

  /** A client's view changed outside the registry (a node id conflict on it): in the next batch. */
  touch(nodeId: string): void {
    if (!this.watching) return
    const client = this.deps.membership.get(nodeId)
    if (client) this.dirty.set(nodeId, client)
  }

  onTask(record: TaskRecord): void {
    if (!this.watching) return
    if (this.tasks.length < MAX_TASKS_PER_BATCH) this.tasks.push(record)
    const touched = record.node_id === null ? undefined : this.deps.membership.get(record.node_id)
    if (touched) this.dirty.set(touched.nodeId, touched)
  }

  snapshot(): MonitorSnapshot {
    const { membership, stats } = this.deps
    return {
      clients: membership.views(),
      regions: this.deps.regions().tree(membership.regionCounts()),
      series: stats.series(this.deps.clock.now()),
      recent: stats.recent(),
      status: this.deps.statusLine(),
    }
  }

  /** Sends what changed since the last flush, with the last whole second and the totals (every 500 ms). */
  flush(): void {
    if (!this.watching) return
    const batch = this.takeBatch()
    const [point] = this.deps.stats.series(this.deps.clock.now(), 1)
    // Joins, leaves and health changes move the tree's counts: send it along so the dashboard's tree stays live.
    const regions = batch && (batch.clients.length > 0 || batch.removed.length > 0) ? this.deps.regions().tree(this.deps.membership.regionCounts()) : undefined
    const update: MonitorUpdate = { ...batch, ...(regions ? { regions } : {}), ...(point ? { point } : {}), status: this.deps.statusLine() }
    this.deps.publish(MONITOR_TOPIC, frame({ type: 'update', payload: update }))
  }

  /** The changes since the last call, or undefined if there were none. */
  private takeBatch() {
    if (this.dirty.size === 0 && this.removed.length === 0 && this.tasks.length === 0) return undefined
    const batch = {
      clients: [...this.dirty.values()].map((client) => this.deps.membership.view(client)),
      removed: this.removed,
      tasks: this.tasks.map(taskView),
    }
    this.dirty.clear()
    this.removed = []
    this.tasks = []
    return batch
  }
}

function frame(message: MonitorFrame): string {
  return JSON.stringify(message)
}
