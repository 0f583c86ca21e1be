/** What a task handler is given besides the payload. */
export interface TaskContext {
  /** The server's id of the task (`X-Task-ID`); the same on a retry of the same task. */
  taskId: string
  /**
   * Aborts when the caller cancels the task (`DELETE /task/{id}`); over HTTP also when the server gives
   * up on it (its deadline passed: the server cuts the call). Over WebSocket a task the server gave up
   * on is not cancelled: bound long work with a timeout of its own.
   */
  signal: AbortSignal
  /**
   * The caller's W3C trace context, when there is one: pass it to your tracer so the handler's spans
   * join the caller's trace (with tracing on at the server, its parent is the server's attempt span).
   */
  traceparent?: string
  tracestate?: string
}

/** The trace headers an agent got with a task. */
export type TaskTrace = Pick<TaskContext, 'traceparent' | 'tracestate'>

/**
 * Answers one task. Whatever it returns is the body of a 200, unless it is exactly
 * `{ status, headers?, body, retry? }` (a numeric status 200-599). A thrown error is a 500 with
 * `{ "error": message }`, or its own `status` (400-599); `retry: false` on it (or on a full answer)
 * asks the server not to retry a 5xx on another agent.
 */
export type TaskHandler<Payload = unknown> = (payload: Payload, context: TaskContext) => unknown

/** A result that chooses its own status and headers. */
export interface FullAnswer {
  status: number
  headers?: Record<string, string>
  body: unknown
  /** false: the server must not retry this 5xx elsewhere (the work may have been done in part). */
  retry?: boolean
}

/** An answer ready to send: the status, the body already serialized, and what else the handler chose. */
export interface ReadyAnswer {
  status: number
  json: string
  headers?: Record<string, string>
  retry?: false
}

const FULL_ANSWER_KEYS = new Set(['status', 'headers', 'body', 'retry'])

/**
 * A result is a full answer only if it has exactly that shape (a numeric status 200-599 and a body,
 * nothing else): a handler that returns its data, say `{status: "completed", result}`, is not taken
 * for one.
 */
export function isFullAnswer(result: unknown): result is FullAnswer {
  if (typeof result !== 'object' || result === null || Array.isArray(result)) return false
  const { status, headers } = result as Record<string, unknown>
  return (
    Number.isInteger(status) &&
    (status as number) >= 200 &&
    (status as number) <= 599 &&
    Object.hasOwn(result, 'body') &&
    Object.keys(result).every((key) => FULL_ANSWER_KEYS.has(key)) &&
    (headers === undefined || (typeof headers === 'object' && headers !== null && Object.values(headers).every((value) => typeof value === 'string')))
  )
}

/** A thrown error's own `status` (400-599), if it carries one: `Object.assign(new Error('no such user'), { status: 404 })`. */
function statusOf(error: unknown): number | undefined {
  const status = (error as { status?: unknown } | null)?.status
  return Number.isInteger(status) && (status as number) >= 400 && (status as number) <= 599 ? (status as number) : undefined
}

/**
 * Runs a task to an answer that can always be sent: a thrown error is a 500 carrying the reason, or
 * the error's own `status` (a 4xx reaches the caller as-is and is not retried), and `retry: false`
 * on it asks the server not to retry; a result that is not JSON (a BigInt, a cycle) is a 500.
 */
export async function answerTask(handler: TaskHandler, payload: unknown, taskId: string, signal: AbortSignal, trace: TaskTrace = {}): Promise<ReadyAnswer> {
  let answer: FullAnswer
  try {
    const context: TaskContext = { taskId, signal }
    if (trace.traceparent !== undefined) context.traceparent = trace.traceparent
    if (trace.tracestate !== undefined) context.tracestate = trace.tracestate
    const result: unknown = await handler(payload, context)
    answer = isFullAnswer(result) ? result : { status: 200, body: result }
  } catch (error) {
    const noRetry = (error as { retry?: unknown } | null)?.retry === false ? { retry: false } : {}
    answer = { status: statusOf(error) ?? 500, body: { error: messageOf(error) }, ...noRetry }
  }
  try {
    const extra = { ...(answer.headers === undefined ? {} : { headers: answer.headers }), ...(answer.retry === false ? { retry: false as const } : {}) }
    return { status: answer.status, json: JSON.stringify(answer.body ?? null) ?? 'null', ...extra }
  } catch (error) {
    return { status: 500, json: JSON.stringify({ error: `the handler's result cannot be sent as JSON: ${messageOf(error)}` }) }
  }
}

/** One line on why a task failed, for the agent's log. */
export function describeFailure(answer: ReadyAnswer): string {
  let error: unknown = answer.json
  try {
    const parsed: unknown = JSON.parse(answer.json)
    error = parsed && typeof parsed === 'object' && 'error' in parsed ? parsed.error : parsed
  } catch {
    // answerTask always makes JSON; the raw text would do anyway.
  }
  return (typeof error === 'string' ? error : (JSON.stringify(error) ?? '')).replace(/\s+/g, ' ').slice(0, 200)
}

export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message
  // Anything may be thrown, also what cannot be made a string (`Object.create(null)`, a broken toString):
  // that must not throw in turn, or the task would end with no answer at all.
  try {
    return String(error)
  } catch {
    return `a thrown ${Object.prototype.toString.call(error).slice(8, -1)} that cannot be shown as text`
  }
}
