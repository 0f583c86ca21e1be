import type { Server } from 'bun'
import { Hono } from 'hono'
import type { Clock } from '../clock.ts'
import type { Settings } from '../config/settings.ts'
import { errorResponse, MoonlightError } from '../errors.ts'
import type { Membership } from '../fleet/membership.ts'
import type { RegistrationDeps } from '../fleet/registration.ts'
import type { TaskStats } from '../observe/task-stats.ts'
import type { StoredTasks } from '../tasks/stored/runner.ts'
import type { StoreFigures } from '../tasks/stored/store.ts'
import type { ClusterView } from '../wire/views.ts'
import { mountFleetRoutes } from './fleet-routes.ts'
import type { MetricsSource } from './metrics.ts'
import { mountOperatorRoutes, type OperatorDeps } from './operator-routes.ts'
import { afterUnreadBody } from './oversized-body.ts'
import { mountPages } from './pages.ts'
import { requestPath } from './request-path.ts'
import { mountServerRoutes } from './server-routes.ts'
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
    // A refusal sent before the body was read (a token, no such route): read it first, or a client still writing gets EPIPE.
    if (c.res.status >= 400) await afterUnreadBody(c.req.raw, c.res, settings.config)
  })

  mountFleetRoutes(app, deps)
  mountServerRoutes(app, deps)
  mountOperatorRoutes(app, { ...deps.operator, settings, membership, clock: deps.clock })

  mountStoredTaskRoutes(app, settings, deps.storedTasks)

  mountPages(app, settings.config)

  app.notFound((c) => errorResponse(new MoonlightError(404, 'not_found', `no route for ${c.req.method} ${c.req.path}`)))

  app.onError((error) => errorResponse(error, deps.report))

  return app
}
