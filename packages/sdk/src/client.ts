import type { FetchLike } from './agent.ts'
import { MoonlightError } from './errors.ts'
import type { AcceptedTask, BroadcastReply, ErrorBody, RoutingOptions, TaskView } from './wire.ts'

export interface ClientOptions {
  /** The server's http(s) base URL. */
  server: string
  /** A token with the caller role (the server's `tokens`); omit it for a server with `require_task_token: false`. */
  token?: string
  /** Default: the global fetch. */
  fetch?: FetchLike
}

export interface TaskOptions extends RoutingOptions {
  /** The same key from the same token returns the same task and never runs it twice. */
  idempotencyKey?: string
  /** Gives up waiting (the task may still run). */
  signal?: AbortSignal
}

/** An agent's answer, as it sent it: any status, including its own 4xx and 5xx. */
export interface TaskAnswer<Body = unknown> {
  status: number
  headers: Headers
  /** The body parsed as JSON, or its text when it is not JSON, or its bytes (a Uint8Array) when they are not UTF-8 text (an image); null when empty. */
  body: Body
  taskId: string
  /** Which agent answered. */
  nodeId: string | undefined
  attempts: number
  /** A replay of an earlier request with the same idempotency key. */
  replayed: boolean
}

/** Waiting for a stored task: `wait` seconds (at most 60) the server holds the request until the task ends. */
export interface WaitOptions {
  wait?: number
  signal?: AbortSignal
}

export interface Client {
  /** Runs one task and returns the agent's answer; the server's own errors throw MoonlightError. */
  task<Body = unknown>(region: string, payload: unknown, options?: TaskOptions): Promise<TaskAnswer<Body>>
  /** Sends the task to every agent at or under the region and returns each one's answer. */
  broadcast(region: string, payload: unknown, options?: { timeout?: number; signal?: AbortSignal }): Promise<BroadcastReply>
  /** Submits an async task; returns its id at once. */
  submit(region: string, payload: unknown, options?: TaskOptions): Promise<string>
  /** A stored task's state (and its answer once it has one). */
  get(taskId: string, options?: WaitOptions): Promise<TaskView>
  /** A stored task's answer, exactly as a sync call would have had it; null while it has not ended. A failed task throws. */
  result<Body = unknown>(taskId: string, options?: WaitOptions): Promise<TaskAnswer<Body> | null>
  /** Cancels a stored task; returns its view, now `cancelled`. */
  cancel(taskId: string): Promise<TaskView>
}

/**
 * A caller of a Moonlight server.
 * @example
 * const moonlight = createClient({ server: 'http://localhost:8080', token })
 * const { status, body } = await moonlight.task('eu-west-1', { n: 21 }, { key: 'user-42' })
 */
export function createClient(options: ClientOptions): Client {
  const server = options.server.replace(/\/+$/, '')
  const fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init))

  async function call(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { ...extraHeaders }
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (options.token) headers.authorization = `Bearer ${options.token}`
    try {
      return await fetchImpl(`${server}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal })
    } catch (error) {
      if (signal?.aborted) throw error
      // Bun ends some fetch errors (too many redirects, say) with advice to pass `verbose: true`: not the caller's concern.
      const reason = (error instanceof Error ? error.message : String(error)).replace(/\.?\s*For more information, pass `verbose: true`.*$/, '')
      throw new MoonlightError(`cannot reach ${server}: ${reason}`, 0, 'unreachable')
    }
  }

  function taskBody(region: string, payload: unknown, mode: string, routing: RoutingOptions): Record<string, unknown> {
    const { key, node_id, fallback, retry, retry_on, timeout, priority, queue_timeout } = routing
    const fields = { key, node_id, fallback, retry, retry_on, timeout, priority, queue_timeout }
    return { region, payload, mode, ...Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) }
  }

  const keyHeader = (key: string | undefined): Record<string, string> => (key === undefined ? {} : { 'idempotency-key': key })
  /** A single or async task: its routing fields, its idempotency key as the header, its signal. */
  const postTask = (mode: 'single' | 'async', region: string, payload: unknown, taskOptions: TaskOptions) =>
    call('POST', '/task/request', taskBody(region, payload, mode, taskOptions), keyHeader(taskOptions.idempotencyKey), taskOptions.signal)
  const taskPath = (taskId: string) => `/task/${encodeURIComponent(taskId)}`
  const waitQuery = (wait: number | undefined) => (wait === undefined ? '' : `?wait=${wait}`)

  return {
    async task<Body>(region: string, payload: unknown, taskOptions: TaskOptions = {}) {
      return answerOf<Body>(await postTask('single', region, payload, taskOptions))
    },
    async broadcast(region, payload, broadcastOptions = {}) {
      const { timeout, signal } = broadcastOptions
      const response = await call('POST', '/task/request', taskBody(region, payload, 'broadcast', { timeout }), {}, signal)
      // A broadcast nobody answered is a 502 with every agent's result: still a reply, not an error.
      const body = await readBody(response)
      if (isErrorBody(body)) throw errorOf(response.status, body)
      if (!response.ok && response.status !== 502) throw errorOf(response.status, body)
      // A 502 is a reply only with every agent's result: a proxy's own 502 page is not one.
      return expectShape(response.status, body, isBroadcastReply)
    },
    async submit(region, payload, taskOptions = {}) {
      const response = await postTask('async', region, payload, taskOptions)
      const body = await readBody(response)
      if (response.status !== 202) throw errorOf(response.status, body)
      return expectShape(response.status, body, isAcceptedTask).task_id
    },
    async get(taskId, waitOptions = {}) {
      // GET /task/{id} answers at once; a wait goes through /result, whose 202 (not ended yet) is the same view.
      if (waitOptions.wait !== undefined) {
        const response = await call('GET', `${taskPath(taskId)}/result${waitQuery(waitOptions.wait)}`, undefined, {}, waitOptions.signal)
        if (response.status === 202) return expectShape(202, await readBody(response), isTaskView)
        // Ended (or unknown): the view says how, whatever the result was.
        await response.body?.cancel()
      }
      const response = await call('GET', taskPath(taskId), undefined, {}, waitOptions.signal)
      const body = await readBody(response)
      if (!response.ok) throw errorOf(response.status, body)
      return expectShape(response.status, body, isTaskView)
    },
    async result<Body>(taskId: string, waitOptions: WaitOptions = {}) {
      const response = await call('GET', `${taskPath(taskId)}/result${waitQuery(waitOptions.wait)}`, undefined, {}, waitOptions.signal)
      if (response.status === 202) {
        await response.body?.cancel()
        return null
      }
      return answerOf<Body>(response)
    },
    async cancel(taskId) {
      const response = await call('DELETE', taskPath(taskId))
      const body = await readBody(response)
      if (!response.ok) throw errorOf(response.status, body)
      return expectShape(response.status, body, isTaskView)
    },
  }
}

/**
 * An agent's answer carries `X-Moonlight-Node`; an answer without it is the server's own, and a
 * server's error status throws.
 */
async function answerOf<Body>(response: Response): Promise<TaskAnswer<Body>> {
  const body = await readBody(response)
  const nodeId = response.headers.get('x-moonlight-node') ?? undefined
  if (nodeId === undefined && response.status >= 400) throw errorOf(response.status, body)
  return {
    status: response.status,
    headers: response.headers,
    // The caller's `Body` is its word on what its agents answer; the SDK cannot check a type it does not know.
    body: body as Body,
    taskId: response.headers.get('x-task-id') ?? '',
    nodeId,
    attempts: Number(response.headers.get('x-moonlight-attempts') ?? 1),
    replayed: response.headers.get('idempotent-replayed') === 'true',
  }
}

/** Refuses bytes that are not UTF-8 (they stay bytes), and keeps a leading BOM in a text: it is the agent's. */
const EXACT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** A body as JSON, else its text, else (not UTF-8: an image, any binary answer) its bytes; null when empty. */
async function readBody(response: Response): Promise<unknown> {
  const bytes = new Uint8Array(await response.arrayBuffer())
  if (bytes.length === 0) return null
  let text: string
  try {
    text = EXACT_UTF8.decode(bytes)
  } catch {
    return bytes
  }
  try {
    // JSON after a BOM is still JSON, as response.text() would have read it.
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text)
  } catch {
    return text
  }
}

function isErrorBody(body: unknown): body is ErrorBody {
  return typeof body === 'object' && body !== null && typeof (body as ErrorBody).error === 'string' && typeof (body as ErrorBody).code === 'string'
}

/**
 * The body, if it has the shape the server's success answers have; else the answer was not the
 * server's (a proxy's page, another service) and throws `unexpected_answer` rather than reach the
 * caller as a BroadcastReply, a task id or a TaskView it is not.
 */
function expectShape<T>(status: number, body: unknown, is: (body: unknown) => body is T): T {
  if (is(body)) return body
  throw errorOf(status, body)
}

function isRecord(body: unknown): body is Record<string, unknown> {
  return typeof body === 'object' && body !== null && !Array.isArray(body)
}

function isBroadcastReply(body: unknown): body is BroadcastReply {
  return isRecord(body) && Array.isArray(body.results)
}

function isAcceptedTask(body: unknown): body is AcceptedTask {
  return isRecord(body) && typeof body.task_id === 'string' && body.task_id !== ''
}

function isTaskView(body: unknown): body is TaskView {
  return isRecord(body) && typeof body.task_id === 'string' && typeof body.state === 'string'
}

function errorOf(status: number, body: unknown): MoonlightError {
  if (!isErrorBody(body))
    return new MoonlightError(`HTTP ${status}: ${String(typeof body === 'string' ? body : JSON.stringify(body)).slice(0, 200)}`, status, 'unexpected_answer')
  const { error, code, ...details } = body
  return new MoonlightError(error, status, code, details)
}
