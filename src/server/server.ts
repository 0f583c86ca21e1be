import { hostname } from 'node:os'
import type { Server } from 'bun'
import { type Clock, systemClock } from '../clock.ts'
import { Cluster, type InstanceInfo } from '../cluster/cluster.ts'
import { RedisTaskStore } from '../cluster/redis-task-store.ts'
import { ConfigError, type LoadedConfig } from '../config/config.ts'
import { randomToken } from '../config/kept-token.ts'
import { planReload } from '../config/reload.ts'
import { healthPolicy, makeSettings, type Settings } from '../config/settings.ts'
import { errorResponse, shuttingDown } from '../errors.ts'
import { LocalMembership } from '../fleet/membership.ts'
import { NodeConflicts } from '../fleet/refused-claims.ts'
import type { RegistrationDeps } from '../fleet/registration.ts'
import { Registry, type RegistryEvent } from '../fleet/registry.ts'
import { createApp } from '../http/app.ts'
import { requestPath } from '../http/request-path.ts'
import { outcomeResponse } from '../http/task-outcome.ts'
import { createTaskRoute } from '../http/task-route.ts'
import { EventLoopDelay } from '../observe/event-loop-delay.ts'
import { consoleWrite, createLog, type Log, type LogFields } from '../observe/logger.ts'
import { MonitorFeed } from '../observe/monitor-feed.ts'
import { Observations } from '../observe/observations.ts'
import { ClientTasks, type TaskRecord, TaskStats } from '../observe/task-stats.ts'
import { AuthFailures } from '../security/auth-failures.ts'
import { type CertificatePair, describeCertificate, readConfiguredTls } from '../security/pem-files.ts'
import { Broadcaster } from '../tasks/broadcast.ts'
import { DeadlineTimer } from '../tasks/deadlines.ts'
import { Dispatcher, TaskLoad } from '../tasks/dispatcher.ts'
import { RandomTaskIds } from '../tasks/ids.ts'
import { RetryBudget } from '../tasks/retry-budget.ts'
import { SlotQueue } from '../tasks/slot-waiting.ts'
import { StoredTasks, type TaskNews } from '../tasks/stored/runner.ts'
import { MemoryTaskStore, type StoreLimits, type TaskStore } from '../tasks/stored/store.ts'
import { HttpTransport } from '../transports/http.ts'
import { AttemptError, type Transport } from '../transports/types.ts'
import { type SocketData, WsTransport } from '../transports/ws.ts'
import { VERSION } from '../version.ts'
import type { ClusterView } from '../wire/views.ts'
import { WsGateway } from '../ws/gateway.ts'
import { Housekeeping, housekeepingJobs } from './housekeeping.ts'
import { Listeners } from './listeners.ts'

export interface ServerOptions {
  loaded: LoadedConfig
  /** Overrides the config's port (0 picks a free one). */
  port?: number
  host?: string
  log?: (line: string) => void
  /** Time for everything but Bun's own sockets; tests pass a fake one. */
  clock?: Clock
  /** This instance's name among others (a cluster's instance_id); the host name and port by default. */
  instanceId?: string
  /** The token to use while none is configured (serve: the one kept for the next start); asked at most once. A random one by default. */
  generatedToken?: () => string
}

export interface MoonlightServer {
  readonly url: string
  readonly port: number
  readonly settings: Settings
  readonly registry: Registry
  /** The cluster this instance is part of, if the config has one (src/cluster/cluster.ts). */
  readonly cluster: Cluster | undefined
  /** Resolves once the server is ready: at once alone; in a cluster, once it has claimed its instance id (rejects if another instance has it). */
  readonly ready: Promise<void>
  /** Every route it answers (method and path, `:name` for a path parameter): what /openapi.json must describe. */
  routes(): Array<{ method: string; path: string }>
  /** Applies a new config: tokens, hierarchy, retries, timeouts and health; clients stay connected. */
  reload(loaded: LoadedConfig): void
  /** Answers new requests 503 while in-flight tasks finish (up to `graceMs`), then stops listening and closes WebSockets with 1001. */
  stop(graceMs?: number): Promise<void>
}

/** Starts Moonlight: the task route, the Hono app and the WebSocket gateway on one Bun.serve. Wiring only. */
export function startServer(options: ServerOptions): MoonlightServer {
  const clock = options.clock ?? systemClock
  const started = options.loaded.config
  // Failed authentications per address, on the monotonic clock; one table for the server's life, through every reload.
  const authFailures = new AuthFailures(() => clock.monotonic())
  // Asked at most once, at start or at the first reload that leaves no token configured: the same token for the server's life.
  let generated: string | undefined
  const generatedToken = () => {
    generated ??= (options.generatedToken ?? randomToken)()
    return generated
  }
  const settings = makeSettings(started, { externalTokens: options.loaded.externalTokens, failures: authFailures, generatedToken })
  // A caller's own sink (tests) gets the messages as they are; otherwise log.format and log.level, as reloaded.
  const given = options.log
  const log: Log = given
    ? (message) => given(message)
    : createLog(
        () => settings.config.log,
        consoleWrite,
        () => clock.now(),
      )
  const startedAtMs = clock.now()
  const stats = new TaskStats()
  const clientTasks = new ClientTasks()
  const load = new TaskLoad()
  let stopping = false
  /** In a cluster: set once this instance has claimed its id and loaded the others' clients (GET /readyz). */
  let joined = false
  let listeners: Listeners<SocketData> | undefined
  const publish = (topic: string, message: string) => listeners?.publish(topic, message)
  const report = (error: unknown) => log(`[mls] unhandled error: ${(error as Error)?.stack ?? error}`, { level: 'error' })

  const observations = new Observations((region) => settings.regions.names(region) || registry.hasClientsIn(region))
  const eventLoopDelay = new EventLoopDelay(clock)
  eventLoopDelay.start()
  const registry = new Registry(settings.regions, healthPolicy(started), (event) => {
    if (event.type === 'state' && event.client.state === 'ejected') observations.onEjected()
    if (event.client.route === 'ws' && event.type !== 'left') gateway.syncTopics(event.client.nodeId)
    feed.onRegistryEvent(event)
    cluster?.onRegistryEvent(event)
    const { client } = event
    log(describeEvent(event), {
      level: event.type === 'state' && (client.state === 'ejected' || client.state === 'failing') ? 'warn' : 'info',
      fields: { node_id: client.nodeId, region: client.region, protocol: client.protocol },
    })
  })
  registry.maxClients = started.max_clients
  registry.balance = started.routing.balance
  // The default id names the port listened on, known only once listening (port 0 picks one): settled below.
  let instanceId = options.instanceId ?? started.cluster?.instance_id ?? `${hostname()}:${options.port ?? started.port}`
  const conflicts = new NodeConflicts({
    log,
    now: () => clock.now(),
    forgetMs: () => settings.config.client_ttl * 2 * 1000,
    changed: (nodeId) => feed.touch(nodeId),
  })
  const membership = new LocalMembership(registry, instanceId, started.cluster !== undefined, conflicts)
  const wsTransport = new WsTransport(
    () => settings.config.ws.write_timeout * 1000,
    publish,
    () => settings.headerPolicy,
  )
  // Security: the PEM files the config names (tls, agents.ca), read and checked before anything listens.
  let tlsFiles = readConfiguredTls(started)
  const httpTransport = new HttpTransport(
    () => ({
      maxAnswerBytes: settings.config.max_answer_bytes,
      agentCa: tlsFiles.agentCa,
      signingSecret: settings.config.signing_secret,
      headerPolicy: settings.headerPolicy,
      maxConnections: settings.config.http_agents.max_connections,
      idleTimeoutMs: settings.config.http_agents.idle_timeout * 1000,
    }),
    // The agent checks the signature's timestamp against its own clock: real time, whatever clock the server runs on.
    Date.now,
  )
  const deadlines = new DeadlineTimer(clock)
  // Cluster mode: another instance's WebSocket agents are reached through it, over Redis.
  const clusterSettings = started.cluster
    ? {
        redisUrl: started.cluster.redis_url,
        instanceId,
        keyPrefix: started.cluster.key_prefix,
        instanceTtlMs: started.cluster.instance_ttl * 1000,
        commandTimeoutMs: started.cluster.command_timeout * 1000,
        advertiseUrl: started.cluster.advertise_url ?? '',
      }
    : undefined
  const cluster = clusterSettings
    ? new Cluster({
        settings: clusterSettings,
        registry,
        clock,
        deadlines,
        localWs: wsTransport,
        load: () => ({ clients: localClients(), inFlight: load.inFlight }),
        // Bound once the store exists (below): called only after the cluster has started.
        restoreTasks: (): Promise<string[]> => redisStore?.restore(storedTasks.runningHere(), instanceId) ?? Promise.resolve([]),
        log,
      })
    : undefined
  const transports = { http: httpTransport, ws: wsTransport, relay: cluster?.relay ?? NO_RELAY }
  const feed = new MonitorFeed({ membership, regions: () => settings.regions, stats, statusLine, clock, publish })
  const onFinished = (record: Parameters<TaskStats['record']>[0]) => {
    stats.record(record, record.finishedAtMs)
    clientTasks.record(record)
    observations.onTask(record)
    if (settings.config.log.access) log(accessLine(record), { fields: accessFields(record) })
    feed.onTask(record)
  }
  const taskDeps = {
    registry,
    transports,
    settings: () => ({
      retryCount: settings.config.retry_count,
      taskTimeoutMs: settings.config.task_timeout * 1000,
      preferLocal: started.cluster?.prefer_local === true,
    }),
    deadlines,
    load,
    clock,
    onFinished,
    onAttempt: (client: { protocol: 'http' | 'ws' }, ms: number) => observations.onAttempt(client.protocol, ms),
    retryBudget: new RetryBudget(() => settings.config.routing.retry_budget),
    slots: new SlotQueue(registry, clock, () => ({
      timeoutMs: settings.config.queue.timeout * 1000,
      max: settings.config.queue.max,
      promoteAfterMs: settings.config.queue.promote_after * 1000,
    })),
  }
  const dispatcher = new Dispatcher(taskDeps)
  const broadcaster = new Broadcaster(taskDeps)
  // Stored tasks (async, or with an Idempotency-Key): in memory alone, in Redis in a cluster.
  const storeLimits = (): StoreLimits => ({
    resultTtlMs: settings.config.tasks.result_ttl * 1000,
    maxResults: settings.config.tasks.max_results,
    maxBytes: settings.config.tasks.max_bytes,
    idempotencyTtlMs: settings.config.tasks.idempotency_ttl * 1000,
  })
  const redisStore: RedisTaskStore | undefined = cluster ? new RedisTaskStore(cluster.connection, cluster.keys, storeLimits) : undefined
  const taskStore: TaskStore = redisStore ?? new MemoryTaskStore(storeLimits)
  const taskNews: TaskNews = cluster
    ? {
        queued: () => void cluster.connection.publish(cluster.keys.taskEvents, '{"type":"queued"}').catch(() => undefined),
        finished: (taskId) =>
          void cluster.connection.publish(cluster.keys.taskEvents, JSON.stringify({ type: 'finished', task_id: taskId })).catch(() => undefined),
        cancel: (taskId) =>
          void cluster.connection.publish(cluster.keys.taskEvents, JSON.stringify({ type: 'cancel', task_id: taskId })).catch(() => undefined),
      }
    : { queued: () => undefined, finished: () => undefined, cancel: () => undefined }
  const storedTasks = new StoredTasks({
    store: taskStore,
    dispatcher,
    clock,
    settings: () => ({
      concurrency: settings.config.tasks.concurrency,
      claimTimeoutMs: (settings.config.task_timeout + settings.config.tasks.claim_margin) * 1000,
      resultTtlMs: settings.config.tasks.result_ttl * 1000,
      idempotencyTtlMs: settings.config.tasks.idempotency_ttl * 1000,
    }),
    instanceId: () => instanceId,
    news: taskNews,
    respond: (outcome, taskId, disclosure) => outcomeResponse(outcome, taskId, disclosure, cluster ? instanceId : undefined),
    tellAgentCancelled: (taskId) => wsTransport.cancel(taskId),
    log,
  })
  if (cluster) {
    void cluster.connection.subscribe(cluster.keys.taskEvents, (message) => {
      const news = parseTaskNews(message)
      if (news?.type === 'queued') void storedTasks.pump(false)
      else if (news?.type === 'finished') storedTasks.onFinished(news.task_id)
      else if (news?.type === 'cancel') storedTasks.onCancel(news.task_id)
    })
  }
  const registration: RegistrationDeps = {
    settings,
    registry,
    clock,
    isAlive: (client) => gateway.isAlive(client.nodeId),
    conflicts,
    onReplaced: (previous, replacement) => {
      // A WebSocket node replaced by another socket is closed by the gateway when it attaches the new one.
      if (previous.protocol === 'ws' && replacement.protocol === 'http') wsTransport.socketOf(previous.nodeId)?.close(4000, 'replaced by an HTTP registration')
    },
  }
  const gateway: WsGateway = new WsGateway({
    settings,
    registry,
    registration,
    transport: wsTransport,
    feed,
    clock,
    log,
    onBadMessage: (code) => observations.onBadMessage(code),
  })

  const app = createApp({
    settings,
    membership,
    registration,
    stats,
    clock,
    version: VERSION,
    startedAtMs,
    inFlight: () => load.inFlight,
    wsConnections: () => gateway.sockets.size,
    metrics: {
      capacity: () => ({
        queued: taskDeps.slots.depth,
        waits: taskDeps.slots.waits,
        shed: taskDeps.slots.shed,
        retriesRefused: taskDeps.retryBudget.refused,
      }),
      httpAgentPools: () => httpTransport.figures(),
      authFailures: () => ({ failures: authFailures.failures, throttled: authFailures.throttled }),
      observations,
      process: () => ({ residentBytes: process.memoryUsage.rss(), eventLoopDelayWorstS: eventLoopDelay.worstS, eventLoopDelayMeanS: eventLoopDelay.meanS }),
      ...(cluster
        ? {
            cluster: () => ({
              redisUp: cluster.redisUp,
              instances: cluster.peers().length + 1,
              relayed: cluster.relay.relayed,
              relaysPending: cluster.relay.pending,
            }),
          }
        : {}),
    },
    isStopping: () => stopping,
    report,
    cluster: clusterView,
    storedTasks,
    notReady: () => {
      if (stopping) return 'the server is shutting down'
      if (!cluster) return undefined
      if (!joined) return 'joining the cluster (claiming the instance id, loading the shared view)'
      if (cluster.redisUp) return undefined
      const why = cluster.redisDownReason === undefined ? '' : `: ${cluster.redisDownReason}`
      return `the cluster store (Redis) cannot be reached${why}; serving degraded, without the shared view`
    },
    taskFigures: () => taskStore.figures(clock.now()),
    operator: {
      registry,
      clientTasks,
      log,
      closeSocket: (nodeId, code, reason) => wsTransport.socketOf(nodeId)?.close(code, reason),
      instanceUrl: (id) => cluster?.peers().find((peer) => peer.instance_id === id)?.advertise_url,
    },
  })
  const taskRoute = createTaskRoute({
    settings,
    dispatcher,
    broadcaster,
    taskIds: new RandomTaskIds(),
    storedTasks,
    now: () => clock.now(),
    clientRegion: (nodeId) => registry.get(nodeId)?.region,
    isStopping: () => stopping,
    report,
    ...(cluster ? { instanceId: () => instanceId } : {}),
  })

  /** New connections get `certificate` from now on (if it is a new one); connections already open keep theirs. */
  function renewCertificate(certificate: CertificatePair): void {
    let renewed: boolean
    try {
      renewed = served.renew(certificate)
    } catch (error) {
      throw new ConfigError(`cannot listen with the new certificate, the previous one stays: ${(error as Error).message}`)
    }
    if (renewed) log(`[mls] TLS: renewed, new connections get ${describeCertificate(certificate)}`)
  }

  function clusterView(): ClusterView {
    if (!cluster) {
      const own = {
        instance_id: instanceId,
        advertise_url: url,
        started_at: new Date(startedAtMs).toISOString(),
        refreshed_at: new Date(clock.now()).toISOString(),
      }
      return {
        mode: 'alone',
        instance_id: instanceId,
        redis: null,
        redis_url: null,
        instances: [{ ...own, clients: localClients(), in_flight: load.inFlight, self: true }],
      }
    }
    // The incarnation tells this process from a restarted twin inside Redis; it means nothing to a reader.
    const shown = ({ incarnation: _incarnation, ...info }: InstanceInfo, self: boolean) => ({ ...info, self })
    return {
      mode: 'cluster',
      instance_id: instanceId,
      redis: cluster.redisUp ? 'up' : 'down',
      redis_url: cluster.redisUrl,
      instances: [shown(cluster.selfInfo(), true), ...cluster.peers().map((peer) => shown(peer, false))],
    }
  }

  function localClients(): number {
    let count = 0
    for (const client of registry.all()) if (client.instance === undefined) count++
    return count
  }

  function statusLine() {
    const latency = observations.taskLatency()
    return { clients: membership.size, in_flight: load.inFlight, tasks_total: stats.total, tasks_failed: stats.failed, ...(latency ? { latency } : {}) }
  }

  /**
   * A request that arrives during the grace period: 503 shutting_down, except /status, which says
   * "Stopping". Either way with `Connection: close`, which Bun honours by closing the connection after
   * the answer, so the client opens no further request on it.
   */
  async function refuseWhileStopping(request: Request, server: Server<SocketData>): Promise<Response> {
    if (request.method === 'GET' && requestPath(request) === '/status') {
      const response = await app.fetch(request, server)
      const headers = new Headers(response.headers)
      headers.set('connection', 'close')
      return new Response(response.body, { status: response.status, headers })
    }
    return errorResponse(shuttingDown(), report, { connection: 'close' })
  }

  const { ws } = started
  const port = options.port ?? started.port
  /** One instance on the port; with a certificate, HTTPS and WSS. A renewal starts another (src/server/listeners.ts). */
  const serveOn = (listenPort: number, tls: CertificatePair | undefined) =>
    Bun.serve<SocketData>({
      port: listenPort,
      ...(tls ? { tls } : {}),
      hostname: options.host ?? started.host,
      // Bun would otherwise let a second server bind the same port, and the kernel split connections between the two.
      reusePort: false,
      routes: {
        '/task/request': {
          POST: (request: Request, server: Server<SocketData>) => (stopping ? refuseWhileStopping(request, server) : taskRoute(request, server)),
        },
        ...(ws.enabled
          ? {
              [ws.path]: (request: Request, server: Server<SocketData>) => (stopping ? refuseWhileStopping(request, server) : gateway.upgrade(request, server)),
            }
          : {}),
      },
      fetch: (request, server) => (stopping ? refuseWhileStopping(request, server) : app.fetch(request, server)),
      // Bun answers a Content-Length over this with an empty 413 before our code runs: max_body_bytes,
      // checked by declared length before reading and counted while a chunked body streams, answers in JSON instead.
      maxRequestBodySize: Number.POSITIVE_INFINITY,
      websocket: gateway.handler,
      // Never Bun's HTML error page: whatever escapes the app still answers in JSON.
      development: false,
      error: (error) => errorResponse(error, report),
    })
  listeners = listen(port, () => new Listeners<SocketData>(serveOn, port, tlsFiles.certificate))
  const served = listeners
  if (tlsFiles.certificate) log(`[mls] TLS: serving ${describeCertificate(tlsFiles.certificate)}`)

  const housekeeping = new Housekeeping(
    clock,
    () =>
      housekeepingJobs({
        config: () => settings.config,
        registry,
        sockets: gateway,
        flushFeed: () => feed.flush(),
      }),
    log,
  )
  housekeeping.start()
  const sweepStore = taskStore instanceof MemoryTaskStore ? clock.every(5000, () => taskStore.sweep(clock.now())) : undefined

  const { hostname: listeningHost, port: listeningPort } = served.server
  // Now the port is known: the default instance id and advertised URL name it.
  if (options.instanceId === undefined && started.cluster?.instance_id === undefined) instanceId = `${hostname()}:${listeningPort}`
  membership.instanceId = instanceId
  if (clusterSettings) {
    clusterSettings.instanceId = instanceId
    clusterSettings.advertiseUrl = started.cluster?.advertise_url ?? `${tlsFiles.certificate ? 'https' : 'http'}://${hostname()}:${listeningPort}`
  }
  const url = `${tlsFiles.certificate ? 'https' : 'http'}://${listeningHost === '0.0.0.0' ? 'localhost' : listeningHost}:${listeningPort}`
  return {
    url,
    port: listeningPort ?? 0,
    settings,
    registry,
    cluster,
    // The queue is read once the instance id is settled (it names this instance's claims).
    ready: (cluster ? cluster.start() : Promise.resolve()).then(() => {
      joined = true
      storedTasks.start()
    }),
    routes: () => [
      { method: 'POST', path: '/task/request' },
      ...(ws.enabled ? [{ method: 'GET', path: ws.path }] : []),
      // Middleware (app.use) is listed as ALL; only real routes count.
      ...app.routes.filter((route) => route.method !== 'ALL').map(({ method, path }) => ({ method, path })),
    ],
    reload(loaded) {
      const plan = planReload(started, loaded.config)
      // Read before anything changes: a bad file rejects the whole reload, and the certificate served stays.
      const nextTls = readConfiguredTls(plan.config)
      if (nextTls.certificate) renewCertificate(nextTls.certificate)
      tlsFiles = nextTls
      if (plan.atNextStart.length > 0) log(`[mls] reload: ${plan.atNextStart.join(', ')} take effect at the next start`)
      Object.assign(settings, makeSettings(plan.config, { externalTokens: loaded.externalTokens, failures: authFailures, generatedToken }))
      registry.reconfigure(settings.regions, healthPolicy(settings.config))
      // Tokens apply at once, to what they already let in: a client this instance holds whose token was
      // revoked (or lost the agent role or its region) leaves now — a WebSocket agent sends its token
      // only in register, and an HTTP agent would otherwise take tasks until client_ttl — and a
      // dashboard whose token lost the monitor role stops watching. Both sockets close as a refused token's does.
      for (const client of [...registry.all()]) {
        if (client.instance !== undefined || settings.access.fingerprintHolds(client.holder, 'agent', client.region)) continue
        registry.remove(client.nodeId, 'its token was revoked')
        if (client.protocol === 'ws') wsTransport.socketOf(client.nodeId)?.close(1008, 'token revoked')
      }
      gateway.closeMonitors((holder) => !settings.access.fingerprintHolds(holder, 'monitor'), 'token revoked')
      registry.maxClients = settings.config.max_clients
      registry.balance = settings.config.routing.balance
      for (const client of registry.all()) if (client.protocol === 'ws') gateway.syncTopics(client.nodeId)
      housekeeping.start()
      log(`[mls] config reloaded from ${loaded.source}`)
    },
    async stop(graceMs = Math.min(settings.config.task_timeout * 1000, 10_000)) {
      if (stopping) return
      // The listener stays open through the grace period: Bun's stop(false) closes idle keep-alive
      // connections at once, and a request already on its way over one would be lost (a reset).
      // Until then every new request gets refuseWhileStopping's answer instead.
      stopping = true
      // Tasks waiting for a slot are answered now: the agents they wait for may be the ones going away.
      taskDeps.slots.close()
      // No task is claimed any more: in a cluster the queued ones wait for the other instances.
      storedTasks.stop()
      sweepStore?.()
      // In a cluster the others stop sending here at once, rather than when the presence expires.
      await cluster?.withdraw()
      const deadline = Date.now() + graceMs
      while (load.inFlight > 0 && Date.now() < deadline) await Bun.sleep(20)
      // Grace is over: whatever still waits answers 503 now, rather than losing its connection unanswered.
      load.closing = true
      deadlines.expireAll()
      // Stops listening and closes idle connections; busy ones close once their answer is sent.
      served.stopListening()
      const flushDeadline = Date.now() + 2000
      while (served.pendingRequests > 0 && Date.now() < flushDeadline) await Bun.sleep(10)
      housekeeping.stop()
      eventLoopDelay.stop()
      gateway.closeAll(1001, 'server shutting down')
      cluster?.stop()
      httpTransport.close()
      await served.close()
    },
  }
}

/** A message on the cluster's task channel, or undefined if it is not one. */
function parseTaskNews(message: string): { type: 'queued' } | { type: 'finished' | 'cancel'; task_id: string } | undefined {
  try {
    const news = JSON.parse(message) as { type?: unknown; task_id?: unknown }
    if (news.type === 'queued') return { type: 'queued' }
    if ((news.type === 'finished' || news.type === 'cancel') && typeof news.task_id === 'string') return { type: news.type, task_id: news.task_id }
  } catch {
    // Not ours: ignored.
  }
  return undefined
}

/** Alone, every client is local: nothing is ever relayed. */
const NO_RELAY: Transport = {
  send: () => Promise.reject(new AttemptError('unreachable', 'not in a cluster')),
}

/** Starts listening; a port taken by another process is a one-line start-up failure, not a stack trace. */
function listen<T>(port: number, start: () => T): T {
  try {
    return start()
  } catch (error) {
    if ((error as { code?: unknown }).code === 'EADDRINUSE') throw new Error(`port ${port} is already in use`)
    throw error
  }
}

/** log.access: one line per task, with what an operator greps for; never its payload or the caller's token. */
function accessLine(record: TaskRecord): string {
  // A broadcast has no one node: how many of the clients it reached answered.
  const to = record.node_id ?? (record.answered === undefined || record.attempts === 0 ? 'no client' : `${record.answered} of ${record.attempts} answered`)
  return `[mls] task ${record.task_id} ${record.mode} ${record.region || 'global'} → ${to}: ${record.status} in ${durationOf(record)} ms, ${record.attempts} attempt${record.attempts === 1 ? '' : 's'}`
}

/** ms to a tenth: whole wall-clock ms would call every fast task 0. */
function durationOf(record: TaskRecord): number {
  return Math.round((record.durationMs ?? record.latency_ms) * 10) / 10
}

function accessFields(record: TaskRecord): LogFields {
  return {
    task_id: record.task_id,
    mode: record.mode,
    region: record.region,
    node_id: record.node_id,
    status: record.status,
    outcome: record.outcome,
    attempts: record.attempts,
    ...(record.answered === undefined ? {} : { answered: record.answered }),
    duration_ms: durationOf(record),
  }
}

/** One log line per membership or health change: what an operator greps for when a region misbehaves. */
function describeEvent(event: RegistryEvent): string {
  const { client } = event
  const who = `${client.protocol} client ${client.nodeId} (${client.region})`
  switch (event.type) {
    case 'joined':
      return `[mls] ${who} joined at ${client.protocol === 'http' ? `${client.ip}:${client.port}` : client.ip}, weight ${client.weight}`
    case 'updated':
      return `[mls] ${who} now has weight ${client.weight}${client.operatorDrained ? ' (drained by an operator)' : client.weight === 0 ? ' (draining)' : ''}`
    case 'left':
      return `[mls] ${who} left: ${event.reason}`
    case 'state':
      if (client.state === 'ejected')
        return `[mls] ${who} ejected after ${client.consecutiveFailures} consecutive failures, until ${new Date(client.ejectedUntil).toISOString()}`
      if (client.state === 'failing')
        return `[mls] ${who} is failing (${client.consecutiveFailures} consecutive failures): kept in service, as ejecting it would leave its pool with too few clients (health.max_ejected_percent)`
      return `[mls] ${who} is ${client.state === 'probation' ? 'on probation: the next task decides' : 'healthy again'}`
  }
}
