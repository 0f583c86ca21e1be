import { accessFields, accessLine } from '../observe/event-lines.ts'
import { EventLoopDelay } from '../observe/event-loop-delay.ts'
import { MonitorFeed } from '../observe/monitor-feed.ts'
import { Observations } from '../observe/observations.ts'
import { ClientTasks, type TaskRecord, TaskStats } from '../observe/task-stats.ts'
import { setUpTracing, type Tracing } from '../observe/tracing/tracing-setup.ts'
import type { QueueLine, StatusLine } from '../wire/monitor.ts'
import type { ServerContext } from './context.ts'
import type { FleetWiring } from './fleet-wiring.ts'

/** What the server sees of itself: totals, histograms, each client's recent tasks, the dashboards' feed. */
export interface ObserveWiring {
  stats: TaskStats
  clientTasks: ClientTasks
  observations: Observations
  eventLoopDelay: EventLoopDelay
  feed: MonitorFeed
  /** W3C trace context and span export (src/observe/tracing/). */
  tracing: Tracing
  /** Every finished task, once: counted, kept in the client's history, logged, and sent to the dashboards. */
  onFinished: (record: TaskRecord) => void
  /** The queue's figures for the dashboards' status line: set by the task wiring, which owns the queue. */
  queueLine: { read: (() => QueueLine) | undefined }
}

export function wireObservation(ctx: ServerContext, fleet: FleetWiring): ObserveWiring {
  const { clock, log, load } = ctx
  const { registry, membership } = fleet
  const stats = new TaskStats()
  const clientTasks = new ClientTasks()
  const observations = new Observations((region) => (ctx.settings.regions.names(region) ? 'named' : registry.hasClientsIn(region) ? 'held' : 'other'))
  const eventLoopDelay = new EventLoopDelay(clock)
  eventLoopDelay.start()
  const queueLine: ObserveWiring['queueLine'] = { read: undefined }
  const statusLine = (): StatusLine => {
    const latency = observations.taskLatency()
    const queue = queueLine.read?.()
    return {
      clients: membership.size,
      in_flight: load.inFlight,
      tasks_total: stats.total,
      tasks_failed: stats.failed,
      ...(latency ? { latency } : {}),
      ...(queue ? { queue } : {}),
    }
  }
  const feed = new MonitorFeed({
    membership,
    regions: () => ctx.settings.regions,
    stats,
    statusLine,
    clock,
    publish: (topic, message) => ctx.publish(topic, message),
  })
  fleet.onRegistryEvent((event) => {
    if (event.type === 'state' && event.client.state === 'ejected') observations.onEjected()
    feed.onRegistryEvent(event)
  })
  fleet.conflicts.onChanged = (nodeId) => feed.touch(nodeId)
  // A client with slots filled up or has room again: its row shows it (in flight / max) without waiting for another change.
  registry.watchFull((client) => feed.onRegistryEvent({ type: 'updated', client }))
  const onFinished = (record: TaskRecord) => {
    stats.record(record, record.finishedAtMs)
    clientTasks.record(record)
    observations.onTask(record)
    if (ctx.settings.config.log.access) log(accessLine(record), { fields: accessFields(record) })
    feed.onTask(record)
  }
  const tracing = setUpTracing(
    () => ctx.settings.config,
    clock,
    log,
    () => (ctx.started.cluster ? ctx.identity.instanceId : undefined),
  )
  return { stats, clientTasks, observations, eventLoopDelay, feed, onFinished, queueLine, tracing }
}
