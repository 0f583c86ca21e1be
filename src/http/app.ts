import type { Server } from 'bun'
import { Hono, type MiddlewareHandler } from 'hono'
import { getConnInfo } from 'hono/bun'
import { bodyLimit } from 'hono/body-limit'
import { createMiddleware } from 'hono/factory'
import { HTTPException } from 'hono/http-exception'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { getPath } from 'hono/utils/url'
import type { Dispatcher } from '../dispatch.ts'
import { MoonlightError } from '../errors.ts'
import type { Live } from '../live.ts'
import { Regions } from '../regions.ts'
import { type Client, clientView, type Registry } from '../registry.ts'
import { heartbeatSchema, type TaskRequest, taskRequestSchema } from '../schemas.ts'
import type { TaskStats } from '../task-stats.ts'
import { renderMetrics } from './metrics.ts'
import { mountPages } from './pages.ts'
import { jsonBody, requireJson } from './validate.ts'

export type AppEnv = { Bindings: Server<unknown>; Variables: { sourceIp?: string } }

export interface AppDeps {
  live: Live
  registry: Registry
  dispatcher: Dispatcher
  stats: TaskStats
  version: string
  startedAtMs: number
  wsConnections: () => number
  /** Calls to HTTP agents under way, and how many Bun's fetch runs at once. */
  httpCalls: () => { inFlight: number; limit: number }
  isStopping: () => boolean
  /** A node registered anew over another connection: the old one must go. */
  onReplaced: (previous: Client) => void
}

/** The HTTP API: heartbeats, tasks, status. Every error leaves as JSON through `onError`. */
export function createApp(deps: AppDeps): Hono<AppEnv> {
  const { live, registry, dispatcher } = deps
  const app = new Hono<AppEnv>({ getPath: routePath })

  const requireToken = createMiddleware<AppEnv>(async (c, next) => {
    if (!isAuthorized(live, c.req.header('authorization'))) {
      throw new MoonlightError(401, 'unauthorized', 'missing or invalid token: send "Authorization: Bearer <token>" with one of the configured tokens')
    }
    await next()
  })
  const requireTaskToken = createMiddleware<AppEnv>(async (c, next) => {
    if (live.config.require_task_token) return requireToken(c, next)
    await next()
  })
  // Rebuilt per request so a reloaded max_body_bytes applies at once; the middleware is a closure, not a parse.
  const limitBody: MiddlewareHandler<AppEnv> = (c, next) => {
    // bodyLimit copies a chunked request, and `new Request` refuses a path-only url. Nothing after this needs
    // Bun's own request: the source ip is already read, and a task run from here came chunked or as the fast path's copy.
    if (isPathOnly(c.req.raw.url)) c.req.raw = new Request(wholeUrl(c.req.raw.url), c.req.raw)
    return bodyLimit({
      maxSize: live.config.max_body_bytes,
      onError: () => {
        throw new MoonlightError(413, 'body_too_large', `request body exceeds max_body_bytes (${live.config.max_body_bytes} bytes)`, {
          max_body_bytes: live.config.max_body_bytes,
        })
      },
    })(c, next)
  }

  // The source address is read before bodyLimit, which swaps in a new Request for a chunked body (and Bun knows no address for that one).
  const rememberSourceIp = createMiddleware<AppEnv>(async (c, next) => {
    c.set('sourceIp', getConnInfo(c).remote.address)
    await next()
  })

  app.post('/client/heartbeat', rememberSourceIp, limitBody, requireJson, jsonBody(heartbeatSchema), (c) => {
    const hello = c.req.valid('json')
    if (!live.tokens.has(hello.token)) throw new MoonlightError(401, 'unauthorized', 'invalid token in heartbeat')
    const ip = hello.ip ?? c.get('sourceIp') ?? '127.0.0.1'
    const { client, previous } = registry.announce(
      { nodeId: hello.node_id, region: hello.region, protocol: 'http', ip, port: hello.port, weight: hello.weight ?? 1 },
      Date.now(),
    )
    if (previous) deps.onReplaced(previous)
    return c.json({
      status: 'ok',
      server_time: new Date().toISOString(),
      node_id: client.nodeId,
      region: client.region,
      weight: client.weight,
      client_ttl: live.config.client_ttl,
    })
  })

  // Bun.serve routes well-formed tasks to createTaskFastPath first; this route answers everything else.
  app.post('/task/request', requireTaskToken, limitBody, requireJson, jsonBody(taskRequestSchema), (c) => runTask(deps, c.req.valid('json'), c.req.raw, c.env))

  app.get('/status', (c) => {
    return c.json({
      server: deps.isStopping() ? 'Stopping' : 'Online',
      websocket: live.config.ws.enabled ? 'Connected' : 'Disabled',
      clients: registry.size,
      tasks: dispatcher.inFlight,
      regions: Object.fromEntries(registry.regionCounts()),
      version: deps.version,
      uptime_s: Math.round((Date.now() - deps.startedAtMs) / 1000),
      started_at: new Date(deps.startedAtMs).toISOString(),
      tasks_total: deps.stats.total,
      tasks_failed: deps.stats.failed,
      websocket_connections: deps.wsConnections(),
    })
  })

  app.get('/clients', requireToken, (c) => c.json({ clients: Array.from(registry.all(), clientView) }))

  app.get('/regions', (c) => c.json(live.regions.tree(registry.regionCounts())))

  app.get('/healthz', (c) => c.json({ ok: true }))

  app.get('/metrics', (c) =>
    c.text(
      renderMetrics({
        registry,
        stats: deps.stats,
        inFlight: () => dispatcher.inFlight,
        httpCalls: deps.httpCalls,
        wsConnections: deps.wsConnections,
        startedAtMs: deps.startedAtMs,
      }),
      200,
      { 'content-type': 'text/plain; version=0.0.4' },
    ),
  )

  mountPages(app, live.config)

  app.notFound((c) => c.json({ error: `no route for ${c.req.method} ${c.req.path}`, code: 'not_found' }, 404))

  app.onError((error, c) => errorResponse(error, c.req.method, c.req.path))

  return app
}

/**
 * The hot path of POST /task/request, for Bun.serve's own router: a well-formed single task (valid
 * token, declared length within max_body_bytes, `application/json`, a body that parses and
 * validates) skips Hono's per-request context and middleware chain, which cost more than the rest
 * of the proxying. Anything else goes to `app`, so every failure keeps the one answer its Hono route defines.
 * Bun's router matches the path exactly (no trailing slash, no percent-decoding), so it is not checked again.
 */
export function createTaskFastPath(app: Hono<AppEnv>, deps: AppDeps): (request: Request, server: Server<unknown>) => Promise<Response> {
  const { live } = deps
  return async (request, server) => {
    const { headers } = request
    const declaredLength = headers.get('content-length')
    const plain =
      (!live.config.require_task_token || isAuthorized(live, headers.get('authorization'))) &&
      // A declared length rules out a chunked body: Bun answers 400 to a request that has both.
      declaredLength !== null &&
      Number.parseInt(declaredLength, 10) <= live.config.max_body_bytes &&
      mediaType(headers.get('content-type')) === 'application/json' &&
      !deps.isStopping()
    if (!plain) return app.fetch(request, server)
    const text = await request.text()
    const task = parseTask(text)
    // Broadcasts are not hot; a body that fails here is re-checked by the Hono route, which says why.
    if (task?.mode !== 'single') return app.fetch(new Request(wholeUrl(request.url), { method: 'POST', headers, body: text }), server)
    try {
      return await runTask(deps, task, request, server)
    } catch (error) {
      return errorResponse(error, 'POST', '/task/request')
    }
  }
}

const SLASH = 0x2f
/** Stands in for the authority a path-only url lacks; only Hono's path parser and `new Request` see it. */
const PLACEHOLDER_ORIGIN = 'http://localhost'

/**
 * Bun gives a request without a usable Host (none, as HTTP/1.0 allows; empty; or one it cannot parse)
 * a path-only url: "/healthz?x=1". Any other url starts with its scheme.
 */
function isPathOnly(url: string): boolean {
  return url.charCodeAt(0) === SLASH
}

/** The url made whole for `new Request`, which refuses a path-only one. */
function wholeUrl(url: string): string {
  // Concatenated, not resolved with new URL(path, base): "//evil.example/x" must stay a path.
  return isPathOnly(url) ? PLACEHOLDER_ORIGIN + url : url
}

/**
 * Hono's path parser skips a "scheme://host" that a path-only url lacks ("/healthz" became "z"), so
 * this routes by the path whatever the Host; other requests pay one character check. The request
 * itself stays Bun's, which a copy made whole would not be: Bun knows no client address (a
 * heartbeat's source ip) and takes no timeout (a long task) for a copy.
 */
function routePath(request: Request): string {
  // Hono's getPath reads nothing but the url.
  return isPathOnly(request.url) ? getPath(new Request(wholeUrl(request.url))) : getPath(request)
}

/** Runs one validated task request and answers with the client's reply (or the broadcast's results). */
async function runTask(deps: AppDeps, task: TaskRequest, request: Request, server: Server<unknown> | undefined): Promise<Response> {
  const { dispatcher } = deps
  if (deps.isStopping()) throw new MoonlightError(503, 'shutting_down', 'the server is shutting down')
  const { region: requested, payload, mode } = task
  const region = Regions.normalize(requested)
  const payloadJson = JSON.stringify(payload)
  const taskId = dispatcher.newTaskId()
  // Bun's idleTimeout (10 s) would cut a caller waiting on a slow agent; task_timeout bounds the wait instead.
  server?.timeout(request, 0)
  if (mode === 'broadcast') {
    const results = await dispatcher.broadcast(region, payloadJson, taskId)
    const answered = results.filter((result) => result.error === undefined).length
    return jsonResponse({ task_id: taskId, region, targets: results.length, answered, results }, answered ? 200 : 502, { 'x-task-id': taskId })
  }
  const { answer, client, failedAttempts } = await dispatcher.dispatch(region, payloadJson, taskId)
  // A plain object, not a Headers: the answer's names are already lower-case, and ours come last so they win.
  const headers = {
    ...answer.headers,
    'x-task-id': taskId,
    'x-moonlight-node': client.nodeId,
    'x-moonlight-attempts': String(failedAttempts.length + 1),
  }
  return new Response(answer.body, { status: answer.status, headers })
}

/** Turns any error into the JSON answer the API promises: `{ error, code, ...details }`. */
function errorResponse(error: unknown, method: string, path: string): Response {
  if (error instanceof MoonlightError) return jsonResponse(error.toJSON(), error.status)
  if (error instanceof HTTPException) {
    // Hono's own 4xx (e.g. malformed JSON) keep their status but speak our JSON.
    const status = error.status as ContentfulStatusCode
    const message = error.message === 'Malformed JSON in request body' ? 'request body is not valid JSON' : error.message || 'bad request'
    return jsonResponse({ error: message, code: status === 400 ? 'invalid_json' : 'http_error' }, status)
  }
  console.error(`[mls] unhandled error on ${method} ${path}:`, error)
  return jsonResponse({ error: 'internal server error', code: 'internal' }, 500)
}

/** What Hono's `c.json` builds, for code that answers without a Hono context. */
function jsonResponse(body: unknown, status: number, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...headers, 'content-type': 'application/json' } })
}

/** Whether an Authorization header carries one of the tokens; the usual spelling costs one lookup. */
function isAuthorized(live: Live, header: string | null | undefined): boolean {
  if (!header) return false
  return live.bearerHeaders.has(header) || live.tokens.has(bearerToken(header))
}

/** The token of an `Authorization: Bearer <token>` header; the scheme name is case-insensitive (RFC 9110). */
function bearerToken(header: string): string {
  return header.length > 7 && header.slice(0, 7).toLowerCase() === 'bearer ' ? header.slice(7).trim() : ''
}

function mediaType(contentType: string | null): string {
  if (contentType === null) return ''
  // Nearly every caller sends exactly this: no split, trim or case change for them.
  return contentType === 'application/json' ? contentType : contentType.split(';')[0]!.trim().toLowerCase()
}

/** The task if the body is valid JSON of the right shape; otherwise undefined, and the Hono route explains. */
function parseTask(text: string): TaskRequest | undefined {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return undefined
  }
  const result = taskRequestSchema.safeParse(body)
  return result.success ? result.data : undefined
}
