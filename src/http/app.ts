import type { Server } from 'bun'
import { Hono } from 'hono'
import type { z } from 'zod'
import type { Clock } from '../clock.ts'
import type { Settings } from '../config/settings.ts'
import { errorResponse, MoonlightError } from '../errors.ts'
import type { Membership } from '../fleet/membership.ts'
import type { RegistrationDeps } from '../fleet/registration.ts'
import { register } from '../fleet/registration.ts'
import type { TaskStats } from '../observe/task-stats.ts'
import type { StoredTasks } from '../tasks/stored/runner.ts'
import type { StoreFigures } from '../tasks/stored/store.ts'
import { type HeartbeatReply, heartbeatSchema } from '../wire/agent-hello.ts'
import { nestingDepth } from '../wire/json-text.ts'
import type { ClientList, ClusterView, Status } from '../wire/views.ts'
import { type MetricsSource, renderMetrics } from './metrics.ts'
import { openApiDocument } from './openapi.ts'
import { mountOperatorRoutes, type OperatorDeps } from './operator-routes.ts'
import type { BodyLimits } from './oversized-body.ts'
import { mountPages } from './pages.ts'
import { authorize, clientAddress, limitDepth, parseJson, readJsonText, validate } from './request-checks.ts'
import { requestPath } from './request-path.ts'
import { mountStoredTaskRoutes } from './stored-task-routes.ts'

export type AppEnv = { Bindings: Server<unknown> }

export interface AppDeps {
  settings: Settings
  membership: Membership
  registration: RegistrationDeps
  stats: TaskStats
  clock: Clock
  version: string
  startedAtMs: number
  inFlight: () => number
  wsConnections: () => number
  metrics: Omit<MetricsSource, 'membership' | 'stats' | 'inFlight' | 'wsConnections' | 'startedAtMs' | 'nowMs'>
  isStopping: () => boolean
  report: (error: unknown) => void
  /** Every instance of the cluster (just this one, alone). */
  cluster: () => ClusterView
  storedTasks: StoredTasks
  /** Why the server is not ready for traffic (GET /readyz), or undefined when it is. */
  notReady: () => string | undefined
  /** The task store's figures, for /metrics. */
  taskFigures: () => Promise<StoreFigures>
  /** What the operator routes (a client's detail, drain, eject, forget) need beyond the above. */
  operator: Omit<OperatorDeps, 'settings' | 'membership' | 'clock'>
}

/** The HTTP API but the task route (src/http/task-route.ts): heartbeats, status, clients. Every error leaves as JSON. */
export function createApp(deps: AppDeps): Hono<AppEnv> {
  const { settings, membership } = deps
  // Routed by the path whatever the Host (see requestPath); the request stays Bun's own, whose client address and timeout a copy would lose.
  const app = new Hono<AppEnv>({ getPath: requestPath })
  // Every answer of the API: a browser must never read JSON (or an error) as something else.
  app.use(async (c, next) => {
    await next()
    c.res.headers.set('x-content-type-options', 'nosniff')
  })

  app.post('/client/heartbeat', async (c) => {
    const hello = await readJsonBody(c.req.raw, settings.config, heartbeatSchema)
    const sourceIp = clientAddress(settings, c.env, c.req.raw)
    const client = await register(deps.registration, hello, { protocol: 'http', sourceIp })
    const reply: HeartbeatReply = {
      status: 'ok',
      server_time: new Date(deps.clock.now()).toISOString(),
      node_id: client.nodeId,
      region: client.region,
      weight: client.weight,
      client_ttl: settings.config.client_ttl,
    }
    return c.json(reply)
  })

  app.get('/status', (c) => {
    const cluster = deps.cluster()
    const status: Status = {
      server: deps.isStopping() ? 'Stopping' : 'Online',
      websocket: settings.config.ws.enabled ? 'Connected' : 'Disabled',
      clients: membership.size,
      tasks: deps.inFlight(),
      regions: Object.fromEntries(membership.regionCounts()),
      version: deps.version,
      uptime_s: Math.round((deps.clock.now() - deps.startedAtMs) / 1000),
      started_at: new Date(deps.startedAtMs).toISOString(),
      tasks_total: deps.stats.total,
      tasks_failed: deps.stats.failed,
      websocket_connections: deps.wsConnections(),
      cluster: cluster.mode === 'alone' ? 'alone' : cluster.redis === 'up' ? 'ok' : 'degraded',
      instance_id: cluster.instance_id,
    }
    const capacity = deps.metrics.capacity?.()
    if (capacity) {
      let refused = 0
      for (const count of capacity.retriesRefused.values()) refused += count
      status.queue = { depth: capacity.queued, shed: { ...capacity.shed }, retries_refused: refused }
    }
    return c.json(status)
  })

  app.get('/clients', (c) => {
    authorize(settings, c.req.raw.headers, 'monitor', () => clientAddress(settings, c.env, c.req.raw))
    const list: ClientList = { clients: membership.views() }
    return c.json(list)
  })

  app.get('/cluster', (c) => {
    authorize(settings, c.req.raw.headers, 'monitor', () => clientAddress(settings, c.env, c.req.raw))
    return c.json(deps.cluster())
  })

  mountOperatorRoutes(app, { ...deps.operator, settings, membership, clock: deps.clock })

  mountStoredTaskRoutes(app, settings, deps.storedTasks)

  app.get('/regions', (c) => c.json(settings.regions.tree(membership.regionCounts())))

  app.get('/healthz', (c) => c.json({ ok: true }))

  // Readiness, not liveness: a load balancer sends traffic only while this is 200.
  app.get('/readyz', (c) => {
    const reason = deps.notReady()
    if (reason !== undefined) throw new MoonlightError(503, 'not_ready', `not ready: ${reason}`, { reason })
    return c.json({ ready: true })
  })

  // Built once per config in force (a reload swaps the config object).
  let openApi: { config: unknown; text: string } | undefined
  app.get('/openapi.json', (c) => {
    if (openApi?.config !== settings.config) openApi = { config: settings.config, text: JSON.stringify(openApiDocument(settings.config, deps.version)) }
    return c.body(openApi.text, 200, { 'content-type': 'application/json' })
  })

  app.get('/metrics', async (c) => {
    const tasks = await deps.taskFigures().catch(() => undefined)
    return c.text(
      renderMetrics({
        tasks,
        ...deps.metrics,
        membership,
        stats: deps.stats,
        inFlight: deps.inFlight,
        wsConnections: deps.wsConnections,
        startedAtMs: deps.startedAtMs,
        nowMs: deps.clock.now(),
      }),
      200,
      { 'content-type': 'text/plain; version=0.0.4' },
    )
  })

  mountPages(app, settings.config)

  app.notFound((c) => errorResponse(new MoonlightError(404, 'not_found', `no route for ${c.req.method} ${c.req.path}`)))

  app.onError((error) => errorResponse(error, deps.report))

  return app
}

/** A JSON body of `schema`'s shape, through the same checks as a task request's. */
async function readJsonBody<Schema extends z.ZodType>(request: Request, limits: BodyLimits, schema: Schema): Promise<z.infer<Schema>> {
  const text = await readJsonText(request, limits)
  const value = parseJson(text)
  limitDepth(nestingDepth(text))
  return validate(schema, value)
}
