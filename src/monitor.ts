import { type Client, clientView, type RegistryEvent } from './registry.ts'
import { type TaskRecord, type TaskView, taskView } from './task-stats.ts'

export const MONITOR_TOPIC = 'monitor'

export interface MonitorBatch {
  /** Clients that joined or changed since the last batch (state, counters, latency). */
  clients: ReturnType<typeof clientView>[]
  removed: Array<{ node_id: string; reason: string }>
  tasks: TaskView[]
}

/** Tasks per batch beyond which the dashboard gets a sample, not every task: the counts stay exact in the series. */
const MAX_TASKS_PER_BATCH = 50

/**
 * Collects what changed for the dashboard and hands it out in batches, so a server doing thousands
 * of tasks a second sends a few small messages a second, not one per task. Clients are collected
 * as "dirty" ids: a client touched by a hundred tasks appears once per batch.
 */
export class Monitor {
  private readonly dirty = new Map<string, Client>()
  private removed: MonitorBatch['removed'] = []
  private tasks: TaskRecord[] = []
  /** Nobody watching: nothing is collected. */
  watching = false

  /** When the last dashboard leaves, what it did not get is dropped: the next one starts from a fresh snapshot. */
  setWatching(watching: boolean): void {
    this.watching = watching
    if (!watching) this.takeBatch()
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

  onTask(record: TaskRecord, touched: Client | undefined): void {
    if (!this.watching) return
    if (this.tasks.length < MAX_TASKS_PER_BATCH) this.tasks.push(record)
    if (touched) this.dirty.set(touched.nodeId, touched)
  }

  /** The changes since the last call, or undefined if there were none. */
  takeBatch(): MonitorBatch | undefined {
    if (this.dirty.size === 0 && this.removed.length === 0 && this.tasks.length === 0) return undefined
    const batch = { clients: [...this.dirty.values()].map(clientView), removed: this.removed, tasks: this.tasks.map(taskView) }
    this.dirty.clear()
    this.removed = []
    this.tasks = []
    return batch
  }
}
