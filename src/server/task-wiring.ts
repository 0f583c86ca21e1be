import { Cluster } from '../cluster/cluster.ts'
import { RedisTaskStore } from '../cluster/redis-task-store.ts'
import { listenForTaskNews, NO_TASK_NEWS, publishTaskNews } from '../cluster/task-news.ts'
import { perConfig } from '../config/settings.ts'
import { outcomeResponse } from '../http/task-outcome.ts'
import { type ConfiguredTls, readConfiguredTls } from '../security/pem-files.ts'
import { Broadcaster } from '../tasks/broadcast.ts'
import { DeadlineTimer } from '../tasks/deadlines.ts'
import { Dispatcher } from '../tasks/dispatcher.ts'
import { RetryBudget } from '../tasks/retry-budget.ts'
import { SlotQueue } from '../tasks/slot-waiting.ts'
import { StoredTasks } from '../tasks/stored/runner.ts'
import { MemoryTaskStore, type StoreLimits, type TaskStore } from '../tasks/stored/store.ts'
import { HttpTransport } from '../transports/http.ts'
import { AttemptError, type Transport } from '../transports/types.ts'
import { WsTransport } from '../transports/ws.ts'
import type { ServerContext } from './context.ts'
import type { FleetWiring } from './fleet-wiring.ts'
import type { ObserveWiring } from './observe-wiring.ts'

/** How tasks reach agents and end: the transports, the cluster's relay, the dispatcher and the stored tasks. */
export interface TaskWiring {
  /** The PEM files the config names (tls, agents.ca): read and checked before anything listens, again on reload. */
  tls: { files: ConfiguredTls }
  wsTransport: WsTransport
  httpTransport: HttpTransport
  deadlines: DeadlineTimer
  cluster: Cluster | undefined
  dispatcher: Dispatcher
  broadcaster: Broadcaster
  slots: SlotQueue
  retryBudget: RetryBudget
  taskStore: TaskStore
  storedTasks: StoredTasks
}

export function wireTasks(ctx: ServerContext, fleet: FleetWiring, observe: ObserveWiring): TaskWiring {
  const { clock, started, log, load, identity } = ctx
  const { registry } = fleet
  const config = () => ctx.settings.config
  const wsTransport = new WsTransport(
    () => config().ws.write_timeout * 1000,
    (topic, message) => ctx.publish(topic, message),
    () => ctx.settings.headerPolicy,
  )
  const tls = { files: readConfiguredTls(started) }
  // The header policy and the PEM files are swapped by a reload together with the config.
  const httpCallSettings = perConfig(config, (current) => ({
    maxAnswerBytes: current.max_answer_bytes,
    agentCa: tls.files.agentCa,
    signingSecret: current.signing_secret,
    headerPolicy: ctx.settings.headerPolicy,
    maxConnections: current.http_agents.max_connections,
    idleTimeoutMs: current.http_agents.idle_timeout * 1000,
  }))
  const httpTransport = new HttpTransport(
    httpCallSettings,
    // The agent checks the signature's timestamp against its own clock: real time, whatever clock the server runs on.
    Date.now,
  )
  const deadlines = new DeadlineTimer(clock)
  // Stored tasks (async, or with an Idempotency-Key): in memory alone, in Redis in a cluster.
  const storeLimits = (): StoreLimits => ({
    resultTtlMs: config().tasks.result_ttl * 1000,
    maxResults: config().tasks.max_results,
    maxBytes: config().tasks.max_bytes,
    idempotencyTtlMs: config().tasks.idempotency_ttl * 1000,
  })
  const slots = new SlotQueue(registry, clock, () => ({
    timeoutMs: config().queue.timeout * 1000,
    max: config().queue.max,
    promoteAfterMs: config().queue.promote_after * 1000,
  }))
  // A client drained, ejected or gone (an operator's action, health, a disconnect, its holder's word):
  // the tasks waiting for it by name are answered now. Registry events come with such changes, not per task.
  fleet.onRegistryEvent((event) => slots.refuseNamed(event.client.nodeId))
  // Cluster mode: another instance's WebSocket agents are reached through it, over Redis.
  const cluster: Cluster | undefined = started.cluster
    ? new Cluster({
        settings: {
          redisUrl: started.cluster.redis_url,
          // Read when the cluster starts, once the server listens and the identity is settled.
          get instanceId() {
            return identity.instanceId
          },
          get advertiseUrl() {
            return identity.advertiseUrl
          },
          keyPrefix: started.cluster.key_prefix,
          instanceTtlMs: started.cluster.instance_ttl * 1000,
          commandTimeoutMs: started.cluster.command_timeout * 1000,
          relayBatch: started.cluster.relay_batch,
        },
        registry,
        clock,
        deadlines,
        localWs: wsTransport,
        slots,
        load: () => ({ clients: registry.localCount(), inFlight: load.inFlight }),
        // Called only after the cluster has started, when the store below exists.
        restoreTasks: (): Promise<string[]> => redisStore?.restore(storedTasks.runningHere(), identity.instanceId) ?? Promise.resolve([]),
        log,
      })
    : undefined
  if (cluster) fleet.onRegistryEvent((event) => cluster.onRegistryEvent(event))
  const redisStore: RedisTaskStore | undefined = cluster ? new RedisTaskStore(cluster.connection, cluster.keys, storeLimits) : undefined
  const taskStore: TaskStore = redisStore ?? new MemoryTaskStore(storeLimits)

  const retryBudget = new RetryBudget(
    () => config().routing.retry_budget,
    (pool) => ctx.settings.regions.names(pool),
  )
  observe.queueLine.read = () => {
    const waitS = slots.waits.quantile('', 0.5)
    let shed = 0
    for (const count of Object.values(slots.shed)) shed += count
    let refused = 0
    for (const count of retryBudget.refused.values()) refused += count
    return {
      depth: slots.depth,
      wait_p50_ms: waitS === undefined || waitS === Number.POSITIVE_INFINITY ? null : Math.round(waitS * 1e6) / 1e3,
      shed,
      retries_refused: refused,
    }
  }
  const taskDeps = {
    registry,
    transports: { http: httpTransport, ws: wsTransport, relay: cluster?.relay ?? NO_RELAY },
    settings: perConfig(config, (current) => ({
      retryCount: current.retry_count,
      taskTimeoutMs: current.task_timeout * 1000,
      preferLocal: started.cluster?.prefer_local === true,
    })),
    deadlines,
    load,
    clock,
    onFinished: observe.onFinished,
    onAttempt: (client: { protocol: 'http' | 'ws' }, ms: number) => observe.observations.onAttempt(client.protocol, ms),
    retryBudget,
    slots,
  }
  const dispatcher = new Dispatcher(taskDeps)
  const storedTasks = new StoredTasks({
    store: taskStore,
    dispatcher,
    clock,
    settings: () => ({
      concurrency: config().tasks.concurrency,
      claimTimeoutMs: (config().task_timeout + config().tasks.claim_margin) * 1000,
      resultTtlMs: config().tasks.result_ttl * 1000,
      idempotencyTtlMs: config().tasks.idempotency_ttl * 1000,
    }),
    instanceId: () => identity.instanceId,
    news: cluster ? publishTaskNews(cluster) : NO_TASK_NEWS,
    respond: (outcome, taskId, disclosure) => outcomeResponse(outcome, taskId, disclosure, cluster ? identity.instanceId : undefined),
    tellAgentCancelled: (taskId) => {
      wsTransport.cancel(taskId)
      cluster?.cancelDelivery(taskId)
    },
    tracer: observe.tracing.tracer,
    log,
    report: ctx.report,
  })
  if (cluster) listenForTaskNews(cluster, storedTasks)
  return {
    tls,
    wsTransport,
    httpTransport,
    deadlines,
    cluster,
    dispatcher,
    broadcaster: new Broadcaster(taskDeps),
    slots,
    retryBudget,
    taskStore,
    storedTasks,
  }
}

/** Alone, every client is local: nothing is ever relayed. */
const NO_RELAY: Transport = {
  send: () => Promise.reject(new AttemptError('unreachable', 'not in a cluster')),
}
