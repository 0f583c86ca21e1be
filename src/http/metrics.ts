import type { Membership } from '../fleet/membership.ts'
import { isDraining } from '../fleet/registry.ts'
import type { Histogram } from '../observe/histogram.ts'
import type { Observations } from '../observe/observations.ts'
import type { TaskStats } from '../observe/task-stats.ts'
import type { ExportFigures } from '../observe/tracing/otlp-exporter.ts'
import type { StoreFigures } from '../tasks/stored/store.ts'
import type { AgentPoolFigures } from '../transports/http-client/pool.ts'

export interface MetricsSource {
  membership: Membership
  stats: TaskStats
  inFlight: () => number
  /** Each HTTP agent's connection pool (src/transports/http-client/pool.ts). */
  httpAgentPools: () => AgentPoolFigures[]
  wsConnections: () => number
  /** Failed authentications so far, and how many of them were throttled (AuthFailures). */
  authFailures: () => { failures: number; throttled: number }
  /** In cluster mode: whether Redis is reachable, the instances known (this one included), tasks relayed to other instances. */
  cluster?: () => { redisUp: boolean; instances: number; relayed: number; relaysPending: number; relayMessages: { tasks: number; replies: number } }
  startedAtMs: number
  nowMs: number
  /** Durations, retries, ejections, bad messages (src/observe/observations.ts). */
  observations: Observations
  /** Spans exported and dropped (src/observe/tracing/otlp-exporter.ts). */
  tracing?: () => ExportFigures
  /** This process: resident memory, and how late the event loop runs its timers. */
  process: () => { residentBytes: number; eventLoopDelayWorstS: number; eventLoopDelayMeanS: number }
  /** The stored tasks (async, idempotent): undefined when the store could not be read (Redis down). */
  tasks?: StoreFigures | undefined
  /** Agent slots, the slot queue and the retry budget (src/tasks/slot-waiting.ts, src/tasks/retry-budget.ts). */
  capacity?: () => CapacityFigures
}

/** What /metrics and /status show of the slot queue and the retry budget. */
export interface CapacityFigures {
  /** Tasks waiting for a slot now. */
  queued: number
  /** How long tasks waited for a slot (served or shed). */
  waits: Histogram
  /** Tasks turned away by the queue, by reason. */
  shed: Readonly<Record<string, number>>
  /** Retries refused by the retry budget, per region pool. */
  retriesRefused: ReadonlyMap<string, number>
}

/**
 * The Prometheus text format, so a fleet's Moonlight servers can be scraped like everything else an
 * operator runs. Public like /status: counts per region and state, no addresses.
 */
export function renderMetrics(source: MetricsSource): string {
  const lines: string[] = []
  const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[string, number]>) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`)
  }
  const histogram = (name: string, help: string, source: Histogram) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`)
    // One by one, not spread into push's arguments: a histogram of many series has more lines than a call may take arguments.
    for (const line of source.lines(name)) lines.push(line)
  }
  const clients = new Map<string, number>()
  for (const client of source.membership.all()) {
    const key = `{region="${client.region}",protocol="${client.protocol}",state="${isDraining(client) ? 'draining' : client.state}"}`
    clients.set(key, (clients.get(key) ?? 0) + 1)
  }
  metric('moonlight_clients', 'gauge', 'Registered clients by region, protocol and health state.', [...clients])
  metric(
    'moonlight_tasks_total',
    'counter',
    'Finished tasks by outcome.',
    Object.entries(source.stats.byOutcome).map(([outcome, count]) => [`{outcome="${outcome}"}`, count]),
  )
  metric('moonlight_tasks_in_flight', 'gauge', 'Tasks waiting for an answer now.', [['', source.inFlight()]])
  const capacity = source.capacity?.()
  if (capacity) {
    metric('moonlight_queue_depth', 'gauge', 'Tasks waiting for an agent slot now (every agent of their pool full).', [['', capacity.queued]])
    histogram('moonlight_queue_wait_seconds', 'Time tasks waited for an agent slot, whether they got one or were shed.', capacity.waits)
    metric(
      'moonlight_queue_shed_total',
      'counter',
      'Tasks turned away by the slot queue, by reason (queue_timeout, queue_full, shutting_down).',
      Object.entries(capacity.shed).map(([reason, count]) => [`{reason="${reason}"}`, count]),
    )
    metric(
      'moonlight_retries_refused_total',
      'counter',
      'Retries refused by routing.retry_budget, by region pool (the task ended with reason retry_budget_exhausted).',
      [...capacity.retriesRefused].map(([pool, count]) => [`{pool="${pool}"}`, count]),
    )
  }
  const { observations } = source
  histogram('moonlight_task_duration_seconds', 'Time from a task accepted to its answer or error, all attempts included.', observations.taskDuration)
  histogram('moonlight_attempt_duration_seconds', 'Time of one attempt on one client, by its protocol.', observations.attemptDuration)
  metric('moonlight_task_retries_total', 'counter', "Attempts beyond a task's first (a failed attempt retried on another client).", [
    ['', observations.retries],
  ])
  metric('moonlight_client_ejections_total', 'counter', 'Clients ejected by passive health checks.', [['', observations.ejections]])
  metric(
    'moonlight_websocket_bad_messages_total',
    'counter',
    'WebSocket messages refused as malformed, by error code.',
    [...observations.badMessages].map(([code, count]) => [`{code="${code}"}`, count]),
  )
  const spans = source.tracing?.()
  if (spans) {
    metric('moonlight_trace_spans_exported_total', 'counter', 'Spans the OTLP collector accepted (tracing).', [['', spans.exported]])
    metric(
      'moonlight_trace_spans_dropped_total',
      'counter',
      'Spans given up: the export queue was full, or their batch failed (collector down, refused, too slow).',
      [['', spans.dropped]],
    )
    metric('moonlight_trace_export_failures_total', 'counter', 'OTLP export requests that failed.', [['', spans.failedRequests]])
  }
  const own = source.process()
  metric('process_resident_memory_bytes', 'gauge', 'Resident memory of this process.', [['', own.residentBytes]])
  metric('moonlight_event_loop_delay_seconds', 'gauge', 'How late the event loop ran a 100 ms timer: the worst of the last 10 s, and the mean since start.', [
    ['{stat="max"}', own.eventLoopDelayWorstS],
    ['{stat="mean"}', own.eventLoopDelayMeanS],
  ])
  // Summed over agents, with the worst agent's queue beside the sum: /metrics is public and names no agent address.
  const pools = source.httpAgentPools()
  const sum = (figure: 'open' | 'busy' | 'queued') => pools.reduce((total, pool) => total + pool[figure], 0)
  metric('moonlight_http_agent_pools', 'gauge', 'HTTP agents the server holds connections to (or calls waiting for one).', [['', pools.length]])
  metric('moonlight_http_agent_connections', 'gauge', 'Keep-alive connections to HTTP agents: open (connecting ones included) and busy with a call.', [
    ['{state="open"}', sum('open')],
    ['{state="busy"}', sum('busy')],
  ])
  metric('moonlight_http_agent_calls_queued', 'gauge', 'Calls to HTTP agents waiting for a connection (an agent at http_agents.max_connections).', [
    ['', sum('queued')],
  ])
  metric('moonlight_http_agent_calls_queued_max', 'gauge', 'The most calls waiting for a connection to any one HTTP agent.', [
    ['', pools.reduce((most, pool) => Math.max(most, pool.queued), 0)],
  ])
  metric('moonlight_websocket_connections', 'gauge', 'Open WebSocket connections (agents and dashboards).', [['', source.wsConnections()]])
  const auth = source.authFailures()
  metric('moonlight_auth_failures_total', 'counter', 'Failed authentications (a missing or wrong token), throttled ones included.', [['', auth.failures]])
  metric('moonlight_auth_throttled_total', 'counter', 'Failed authentications answered too_many_failures (past auth.max_failures per auth.window).', [
    ['', auth.throttled],
  ])
  const cluster = source.cluster?.()
  if (cluster) {
    metric('moonlight_cluster_redis_up', 'gauge', '1 while the cluster store (Redis) is reachable, 0 while this instance runs degraded.', [
      ['', cluster.redisUp ? 1 : 0],
    ])
    metric('moonlight_cluster_instances', 'gauge', 'Instances of the cluster this one knows, itself included.', [['', cluster.instances]])
    metric('moonlight_cluster_relays_total', 'counter', 'Tasks relayed to WebSocket agents held by other instances.', [['', cluster.relayed]])
    metric('moonlight_cluster_relays_pending', 'gauge', 'Relayed tasks waiting for their answer now (each bounded by its deadline).', [
      ['', cluster.relaysPending],
    ])
    metric(
      'moonlight_cluster_relay_messages_total',
      'counter',
      'Redis messages this instance published for relayed tasks (as their origin) and for their answers (as their holder); a batch counts once.',
      [
        ['{kind="tasks"}', cluster.relayMessages.tasks],
        ['{kind="replies"}', cluster.relayMessages.replies],
      ],
    )
  }
  const { tasks } = source
  if (tasks) {
    metric('moonlight_stored_tasks', 'gauge', 'Stored tasks (async ones and those sent with an Idempotency-Key), cluster-wide in a cluster.', [
      ['', tasks.stored],
    ])
    metric('moonlight_async_tasks', 'gauge', 'Async tasks waiting in the queue and claimed by a runner.', [
      ['{state="queued"}', tasks.queued],
      ['{state="running"}', tasks.running],
    ])
    metric('moonlight_stored_tasks_evicted_total', 'counter', 'Finished tasks evicted to stay within tasks.max_results (expired ones not counted).', [
      ['', tasks.evicted],
    ])
  }
  metric('moonlight_uptime_seconds', 'gauge', 'Seconds since the server started.', [['', Math.round((source.nowMs - source.startedAtMs) / 1000)]])
  return `${lines.join('\n')}\n`
}
