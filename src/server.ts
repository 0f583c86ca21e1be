import type { Server } from 'bun'
import type { LoadedConfig } from './config.ts'
import { Dispatcher } from './dispatch.ts'
import { type AppDeps, createApp, createTaskFastPath } from './http/app.ts'
import { healthPolicy, type Live, makeLive } from './live.ts'
import { MONITOR_TOPIC, Monitor } from './monitor.ts'
import { regionTopic } from './regions.ts'
import { clientView, Registry, type RegistryEvent } from './registry.ts'
import { TaskStats } from './task-stats.ts'
import { HttpTransport } from './transports/http.ts'
import { type SocketData, WsTransport } from './transports/ws.ts'
import { VERSION } from './version.ts'
import { WsGateway } from './ws/handler.ts'

export interface ServerOptions {
  loaded: LoadedConfig
  /** Overrides the config's port (0 picks a free one). */
  port?: number
  host?: string
  log?: (line: string) => void
}

export interface MoonlightServer {
  readonly url: string
  readonly port: number
  readonly live: Live
  readonly registry: Registry
  /** Applies a new config: tokens, hierarchy, retries, timeouts and health; clients stay connected. */
  reload(loaded: LoadedConfig): void
  /** Stops accepting, lets in-flight tasks finish (up to `graceMs`), closes WebSockets with 1001. */
  stop(graceMs?: number): Promise<void>
}

const MONITOR_FLUSH_MS = 500
const HOUSEKEEPING_MS = 1000
/** Bun's own default when BUN_CONFIG_MAX_HTTP_REQUESTS is unset. */
const BUN_DEFAULT_FETCH_LIMIT = 256
const FETCH_LIMIT_WARNING_EVERY_MS = 60_000

/** Starts Moonlight: the Hono app and the WebSocket gateway on one Bun.serve. */
export function startServer(options: ServerOptions): MoonlightServer {
  const log = options.log ?? ((line: string) => console.log(line))
  const live = makeLive(options.loaded.config)
  const startedAtMs = Date.now()
  const stats = new TaskStats()
  const monitor = new Monitor()
  let stopping = false
  let bunServer: Server<SocketData> | undefined

  const registry = new Registry(live.regions, healthPolicy(live.config), (event) => {
    if (event.client.protocol === 'ws' && event.type !== 'left') gateway.syncTopics(event.client.nodeId)
    monitor.onRegistryEvent(event)
    log(describeEvent(event))
  })
  const wsTransport = new WsTransport(() => live.config.ws.write_timeout * 1000)
  const httpTransport = new HttpTransport(() => live.config.max_answer_bytes)
  // Bun read it when the process started; reading it again here only tells us what Bun did.
  const fetchLimit = Number(process.env.BUN_CONFIG_MAX_HTTP_REQUESTS) || BUN_DEFAULT_FETCH_LIMIT
  let fetchLimitWarnedAtMs = Number.NEGATIVE_INFINITY
  const dispatcher = new Dispatcher({
    registry,
    http: httpTransport,
    ws: wsTransport,
    settings: () => ({ retryCount: live.config.retry_count, taskTimeoutMs: live.config.task_timeout * 1000 }),
    publish: (region, message) => bunServer?.publish(regionTopic(region), message),
    onFinished: (record) => {
      stats.record(record, record.finishedAtMs)
      if (monitor.watching) monitor.onTask(record, record.node_id === null ? undefined : registry.get(record.node_id))
    },
  })
  const gateway: WsGateway = new WsGateway({
    live,
    registry,
    transport: wsTransport,
    monitorSnapshot: () => ({
      clients: Array.from(registry.all(), clientView),
      regions: live.regions.tree(registry.regionCounts()),
      series: stats.series(Date.now()),
      recent: stats.recent(),
      status: statusLine(),
    }),
    onMonitorCountChange: (watchers) => {
      monitor.setWatching(watchers > 0)
    },
  })
  const appDeps: AppDeps = {
    live,
    registry,
    dispatcher,
    stats,
    version: VERSION,
    startedAtMs,
    wsConnections: () => gateway.sockets.size,
    httpCalls: () => ({ inFlight: httpTransport.inFlight, limit: fetchLimit }),
    isStopping: () => stopping,
    onReplaced: (previous) => {
      if (previous.protocol === 'ws') wsTransport.socketOf(previous.nodeId)?.close(4000, 'replaced by an HTTP registration')
    },
  }
  const app = createApp(appDeps)
  const taskFastPath = createTaskFastPath(app, appDeps)

  function statusLine() {
    return { clients: registry.size, in_flight: dispatcher.inFlight, tasks_total: stats.total, tasks_failed: stats.failed }
  }

  const wsPath = live.config.ws.path
  bunServer = Bun.serve<SocketData>({
    port: options.port ?? live.config.port,
    hostname: options.host ?? live.config.host,
    routes: {
      '/task/request': { POST: taskFastPath },
      ...(live.config.ws.enabled ? { [wsPath]: (request: Request, server: Server<SocketData>) => gateway.upgrade(request, server) } : {}),
    },
    fetch: (request, server) => app.fetch(request, server),
    // Bun answers a Content-Length over this with an empty 413 before our code runs: max_body_bytes,
    // checked by declared length before reading and counted while a chunked body streams, answers in JSON instead.
    maxRequestBodySize: Number.POSITIVE_INFINITY,
    websocket: gateway.handler,
    // Never Bun's HTML error page: whatever escapes the app still answers in JSON.
    development: false,
    error: (error) => {
      log(`[mls] unhandled error: ${error.stack ?? error.message}`)
      return Response.json({ error: 'internal server error', code: 'internal' }, { status: 500 })
    },
  })
  const server = bunServer

  let timers: Array<ReturnType<typeof setInterval>> = []
  function startTimers(): void {
    const { ws } = live.config
    timers = [
      setInterval(() => {
        const now = Date.now()
        registry.endBackoffs(now)
        // Past Bun's fetch limit, calls to HTTP agents queue inside Bun where nothing else would show it.
        const peak = httpTransport.takePeak()
        if (peak > fetchLimit && now - fetchLimitWarnedAtMs >= FETCH_LIMIT_WARNING_EVERY_MS) {
          fetchLimitWarnedAtMs = now
          log(
            `[mls] warning: ${peak} calls to HTTP agents at once, over Bun's limit of ${fetchLimit}: the rest waited in Bun's queue. ` +
              'Start the server with BUN_CONFIG_MAX_HTTP_REQUESTS=4096 (in its environment, or in a .env file in its working directory)',
          )
        }
        for (const client of registry.silent('http', live.config.client_ttl * 1000, now)) {
          registry.remove(client.nodeId, `no heartbeat for ${live.config.client_ttl} s`)
        }
      }, HOUSEKEEPING_MS),
      setInterval(() => {
        if (!monitor.watching) return
        const batch = monitor.takeBatch()
        const [point] = stats.series(Date.now(), 1)
        // Joins, leaves and health changes move the tree's counts: send it along so the dashboard's tree stays live.
        const regions = batch && (batch.clients.length > 0 || batch.removed.length > 0) ? live.regions.tree(registry.regionCounts()) : undefined
        server.publish(MONITOR_TOPIC, JSON.stringify({ type: 'update', payload: { ...batch, regions, point, status: statusLine() } }))
      }, MONITOR_FLUSH_MS),
    ]
    if (ws.enabled) {
      timers.push(setInterval(() => gateway.pingAll(), ws.heartbeat_interval * 1000))
      timers.push(setInterval(() => gateway.closeSilent(Date.now()), ws.connection_check_interval * 1000))
    }
  }
  function stopTimers(): void {
    for (const timer of timers) clearInterval(timer)
  }
  startTimers()

  const url = `http://${server.hostname === '0.0.0.0' ? 'localhost' : server.hostname}:${server.port}`
  return {
    url,
    port: server.port ?? 0,
    live,
    registry,
    reload(loaded) {
      const { port, host, ws, html } = live.config
      const atNextStart = (config: typeof live.config) => JSON.stringify([config.port, config.host, config.ws.enabled, config.ws.path, config.html])
      if (atNextStart(loaded.config) !== atNextStart(live.config)) {
        log('[mls] reload: port, host, ws.enabled, ws.path and html.* take effect at the next start')
      }
      if (loaded.config.max_answer_bytes !== gateway.maxMessageBytes) {
        log('[mls] reload: max_answer_bytes applies to HTTP answers now, to WebSocket messages at the next start')
      }
      // What the running sockets and routes were built on stays as it is, so /status and the timers tell the truth.
      const config = { ...loaded.config, port, host, html, ws: { ...loaded.config.ws, enabled: ws.enabled, path: ws.path } }
      Object.assign(live, makeLive(config, live.generatedToken))
      registry.reconfigure(live.regions, healthPolicy(live.config))
      for (const client of registry.all()) if (client.protocol === 'ws') gateway.syncTopics(client.nodeId)
      stopTimers()
      startTimers()
      log(`[mls] config reloaded from ${loaded.source}`)
    },
    async stop(graceMs = Math.min(live.config.task_timeout * 1000, 10_000)) {
      if (stopping) return
      stopping = true
      void server.stop(false)
      const deadline = Date.now() + graceMs
      while (dispatcher.inFlight > 0 && Date.now() < deadline) await Bun.sleep(20)
      // Grace is over: whatever still waits answers 503 now, rather than losing its connection unanswered.
      dispatcher.abortAll()
      const flushDeadline = Date.now() + 2000
      while (server.pendingRequests > 0 && Date.now() < flushDeadline) await Bun.sleep(10)
      stopTimers()
      gateway.closeAll(1001, 'server shutting down')
      await server.stop(true)
    },
  }
}

/** One log line per membership or health change: what an operator greps for when a region misbehaves. */
function describeEvent(event: RegistryEvent): string {
  const { client } = event
  const who = `${client.protocol} client ${client.nodeId} (${client.region})`
  switch (event.type) {
    case 'joined':
      return `[mls] ${who} joined at ${client.ip}:${client.port}, weight ${client.weight}`
    case 'updated':
      return `[mls] ${who} now has weight ${client.weight}${client.weight === 0 ? ' (draining)' : ''}`
    case 'left':
      return `[mls] ${who} left: ${event.reason}`
    case 'state':
      return client.state === 'ejected'
        ? `[mls] ${who} ejected after ${client.consecutiveFailures} consecutive failures, until ${new Date(client.ejectedUntil).toISOString()}`
        : `[mls] ${who} is ${client.state === 'probation' ? 'on probation: the next task decides' : 'healthy again'}`
  }
}
