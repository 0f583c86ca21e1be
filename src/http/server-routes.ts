import type { Hono } from 'hono'
import { MoonlightError } from '../errors.ts'
import type { Status } from '../wire/views.ts'
import type { AppDeps, AppEnv } from './app.ts'
import { renderMetrics } from './metrics.ts'
import { openApiDocument } from './openapi.ts'
import { authorize } from './request-checks.ts'

/** The server's own routes: status, the cluster, liveness and readiness, this API's document and the metrics. */
export function mountServerRoutes(app: Hono<AppEnv>, deps: AppDeps): void {
  const { settings, membership } = deps
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

  app.get('/cluster', (c) => {
    authorize(settings, c.req.raw, c.env, 'monitor')
    return c.json(deps.cluster())
  })

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
}
