import { readLimited } from './_read-limited.ts'
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
  /**
   * How long `submit`, `get`, `result` and `cancel` wait for the server's whole answer, in ms (`get`
   * and `result`: on top of their `wait`); default 10 000. The server answers them at once, so a
   * server that accepted the connection and never answered, or never ended its body, cannot hold the
   * caller. `task` and `broadcast` wait as long as the server's task_timeout: bound them with `signal`.
   */
  timeoutMs?: number
  /** The largest answer read, in bytes once unpacked (gzip, br…); past it, `answer_too_large`. Default 64 MiB. */
  maxAnswerBytes?: number
}

/** What `get`, `result`, `submit` and `cancel` wait by default: the server answers them at once. */
const DEFAULT_TIMEOUT_MS = 10_000
/** Four times the server's default max_answer_bytes: room for a broadcast's several answers, or one in base64. */
const DEFAULT_MAX_ANSWER_BYTES = 64 * 1024 * 1024

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
  cancel(taskId: string, options?: { signal?: AbortSignal }): Promise<TaskView>
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
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const maxAnswerBytes = options.maxAnswerBytes ?? DEFAULT_MAX_ANSWER_BYTES

  /** One request and its whole answer, read up to maxAnswerBytes; `limitMs` bounds both (none: the caller's signal alone). */
  async function call(method: string, path: string, request: CallOptions = {}): Promise<Answer> {
    const headers: Record<string, string> = { ...request.headers }
    if (request.body !== undefined) headers['content-type'] = 'application/json'
    if (options.token) headers.authorization = `Bearer ${options.token}`
    const deadline = request.limitMs === undefined ? undefined : deadlineOf(request.limitMs, request.signal)
    const signal = deadline?.signal ?? request.signal
    try {
      const body = request.body === undefined ? undefined : JSON.stringify(request.body)
      const response = await fetchImpl(`${server}${path}`, { method, headers, body, signal })
      return { status: response.status, headers: response.headers, ...parseBody(await readAnswer(response, maxAnswerBytes, server)) }
    } catch (error) {
      if (request.signal?.aborted) throw error
      if (deadline?.signal.aborted) throw new MoonlightError(`no answer from ${server} within ${request.limitMs! / 1000} s`, 0, 'unreachable')
      if (error instanceof MoonlightError) throw error
      // Bun ends some fetch errors (too many redirects, say) with advice to pass `verbose: true`: not the caller's concern.
      const reason = (error instanceof Error ? error.message : String(error)).replace(/\.?\s*For more information, pass `verbose: true`.*$/, '')
      throw new MoonlightError(`cannot reach ${server}: ${reason}`, 0, 'unreachable')
    } finally {
      deadline?.dispose()
    }
  }

  function taskBody(region: string, payload: unknown, mode: string, routing: RoutingOptions): Record<string, unknown> {
    const { key, node_id, fallback, retry, retry_on, timeout, priority, queue_timeout } = routing
    const fields = { key, node_id, fallback, retry, retry_on, timeout, priority, queue_timeout }
    return { region, payload, mode, ...Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) }
  }

  const keyHeader = (key: string | undefined): Record<string, string> => (key === undefined ? {} : { 'idempotency-key': key })
  /** A single or async task: its routing fields, its idempotency key as the header, its signal; an async one is answered at once. */
  const postTask = (mode: 'single' | 'async', region: string, payload: unknown, taskOptions: TaskOptions) =>
    call('POST', '/task/request', {
      body: taskBody(region, payload, mode, taskOptions),
      headers: keyHeader(taskOptions.idempotencyKey),
      signal: taskOptions.signal,
      limitMs: mode === 'async' ? timeoutMs : undefined,
    })
  const taskPath = (taskId: string) => `/task/${encodeURIComponent(taskId)}`
  /** A long poll: the server holds it `wait` seconds, then the usual bound. */
  const resultCall = (taskId: string, { wait, signal }: WaitOptions) =>
    call('GET', `${taskPath(taskId)}/result${wait === undefined ? '' : `?wait=${wait}`}`, { signal, limitMs: timeoutMs + (wait ?? 0) * 1000 })

  return {
    async task<Body>(region: string, payload: unknown, taskOptions: TaskOptions = {}) {
      return answerOf<Body>(await postTask('single', region, payload, taskOptions))
    },
    async broadcast(region, payload, broadcastOptions = {}) {
      const { timeout, signal } = broadcastOptions
      const answer = await call('POST', '/task/request', { body: taskBody(region, payload, 'broadcast', { timeout }), signal })
      // A broadcast nobody answered is a 502 with every agent's result: still a reply, not an error.
      if (isErrorBody(answer.body)) throw errorOf(answer)
      if (answer.status >= 300 && answer.status !== 502) throw errorOf(answer)
      // A 502 is a reply only with every agent's result: a proxy's own 502 page is not one.
      return expectShape(answer, isBroadcastReply)
    },
    async submit(region, payload, taskOptions = {}) {
      const answer = await postTask('async', region, payload, taskOptions)
      if (answer.status !== 202) throw errorOf(answer)
      return expectShape(answer, isAcceptedTask).task_id
    },
    async get(taskId, waitOptions = {}) {
      // GET /task/{id} answers at once; a wait goes through /result, whose 202 (not ended yet) is the same view.
      if (waitOptions.wait !== undefined) {
        const waited = await resultCall(taskId, waitOptions)
        if (waited.status === 202) return expectShape(waited, isTaskView)
        // Ended (or unknown): the view says how, whatever the result was.
      }
      const answer = await call('GET', taskPath(taskId), { signal: waitOptions.signal, limitMs: timeoutMs })
      if (answer.status >= 300) throw errorOf(answer)
      return expectShape(answer, isTaskView)
    },
    async result<Body>(taskId: string, waitOptions: WaitOptions = {}) {
      const answer = await resultCall(taskId, waitOptions)
      return answer.status === 202 ? null : answerOf<Body>(answer)
    },
    async cancel(taskId, cancelOptions = {}) {
      const answer = await call('DELETE', taskPath(taskId), { signal: cancelOptions.signal, limitMs: timeoutMs })
      if (answer.status >= 300) throw errorOf(answer)
      return expectShape(answer, isTaskView)
    },
  }
}

interface CallOptions {
  body?: unknown
  headers?: Record<string, string>
  signal?: AbortSignal
  /** Gives up after this many ms, the answer's body included. */
  limitMs?: number
}

/** An answer read whole: its status and headers, its body parsed, and its text to quote in an error. */
interface Answer {
  status: number
  headers: Headers
  body: unknown
  /** The start of the body as it came, for a message (what is not text is said in words). */
  preview: string
}

/**
 * A signal that aborts after `ms`, or when the caller's does. Built by hand rather than with
 * AbortSignal.any/timeout: Node 20 before 20.3 has no `any`, and the timer must end with the call.
 */
function deadlineOf(ms: number, callerSignal: AbortSignal | undefined): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), ms)
  const follow = () => controller.abort(callerSignal?.reason)
  if (callerSignal?.aborted) follow()
  else callerSignal?.addEventListener('abort', follow, { once: true })
  return {
    signal: controller.signal,
    dispose: () => {
      clearTimeout(timer)
      callerSignal?.removeEventListener('abort', follow)
    },
  }
}

/** The body's bytes within maxAnswerBytes (src/_read-limited.ts), or the SDK's error past it. */
async function readAnswer(response: Response, limit: number, server: string): Promise<Uint8Array> {
  const bytes = await readLimited(response, limit)
  if (bytes === undefined)
    throw new MoonlightError(`the answer from ${server} passed ${limit} bytes (maxAnswerBytes): not read further`, response.status, 'answer_too_large')
  return bytes
}

/**
 * An agent's answer carries `X-Moonlight-Node`; an answer without it is the server's own, and a
 * server's error status throws.
 */
function answerOf<Body>(answer: Answer): TaskAnswer<Body> {
  const nodeId = answer.headers.get('x-moonlight-node') ?? undefined
  if (nodeId === undefined && answer.status >= 400) throw errorOf(answer)
  return {
    status: answer.status,
    headers: answer.headers,
    // The caller's `Body` is its word on what its agents answer; the SDK cannot check a type it does not know.
    body: answer.body as Body,
    taskId: answer.headers.get('x-task-id') ?? '',
    nodeId,
    attempts: Number(answer.headers.get('x-moonlight-attempts') ?? 1),
    replayed: answer.headers.get('idempotent-replayed') === 'true',
  }
}

/** Refuses bytes that are not UTF-8 (they stay bytes), and keeps a leading BOM in a text: it is the agent's. */
const EXACT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** A body as JSON, else its text, else (not UTF-8: an image, any binary answer) its bytes; null when empty. */
function parseBody(bytes: Uint8Array): { body: unknown; preview: string } {
  if (bytes.length === 0) return { body: null, preview: '' }
  let text: string
  try {
    text = EXACT_UTF8.decode(bytes)
  } catch {
    return { body: bytes, preview: `${bytes.length} bytes that are not UTF-8 text` }
  }
  const preview = text.slice(0, 200)
  try {
    // JSON after a BOM is still JSON, as response.text() would have read it.
    return { body: JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text), preview }
  } catch {
    return { body: text, preview }
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
function expectShape<T>(answer: Answer, is: (body: unknown) => body is T): T {
  if (is(answer.body)) return answer.body
  throw errorOf(answer)
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

/** The server's error as a MoonlightError; any other answer quotes the start of its text (never re-serialized: JSON nested past the stack would throw). */
function errorOf({ status, body, preview }: Answer): MoonlightError {
  if (!isErrorBody(body)) return new MoonlightError(`HTTP ${status}: ${preview}`, status, 'unexpected_answer')
  const { error, code, ...details } = body
  return new MoonlightError(error, status, code, details)
}
