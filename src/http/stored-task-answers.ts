import { MoonlightError } from '../errors.ts'
import { tokenDigest } from '../security/access.ts'
import type { StoredTask } from '../tasks/stored/store.ts'
import type { AcceptedTask, TaskView } from '../wire/async-task.ts'
import { utf8OrBase64 } from '../wire/bytes.ts'
import { requestToken } from './request-checks.ts'

/**
 * What a stored task (async, or sent with an Idempotency-Key) answers, in one place for the task
 * route that submits it and the routes that read it: its owner, the 202 of a submission, its
 * result as a sync call would have had it, and its view.
 */

/** How long a caller is told to wait before asking again for a result that is not ready. */
const RETRY_AFTER_S = 1

/** The SHA-256 of the request's token (any header that carries one): who a stored task belongs to. '' without a token. */
export function ownerOf(request: Request): string {
  const token = requestToken(request.headers)
  return token === '' ? '' : tokenDigest(token)
}

/** `202` for an async submission: where to find the task. */
export function acceptedResponse(task: StoredTask, replayed: boolean): Response {
  const statusUrl = `/task/${encodeURIComponent(task.task_id)}`
  const body: AcceptedTask = { task_id: task.task_id, state: task.state, status_url: statusUrl }
  return new Response(JSON.stringify(body), {
    status: 202,
    headers: {
      'content-type': 'application/json',
      'x-content-type-options': 'nosniff',
      location: statusUrl,
      'x-task-id': task.task_id,
      ...(replayed ? { 'idempotent-replayed': 'true' } : {}),
    },
  })
}

/** The task's answer as-is, as a sync call would have had it; `202` with Retry-After while it is not ready. */
export function resultResponse(task: StoredTask, replayed: boolean): Response {
  const replay: Record<string, string> = replayed ? { 'idempotent-replayed': 'true' } : {}
  if (task.result) {
    const { status, headers, body_b64 } = task.result
    return new Response(Buffer.from(body_b64, 'base64'), { status, headers: { ...headers, ...replay } })
  }
  if (task.state === 'cancelled') {
    const error = new MoonlightError(409, 'cancelled', `task ${task.task_id} was cancelled`, { task_id: task.task_id })
    return new Response(JSON.stringify({ error: error.message, code: error.code, ...error.details }), {
      status: 409,
      headers: { 'content-type': 'application/json', 'x-content-type-options': 'nosniff', 'x-task-id': task.task_id, ...replay },
    })
  }
  return new Response(JSON.stringify(viewOf(task)), {
    status: 202,
    headers: {
      'content-type': 'application/json',
      'x-content-type-options': 'nosniff',
      'retry-after': String(RETRY_AFTER_S),
      'x-task-id': task.task_id,
      ...replay,
    },
  })
}

/** `GET /task/{id}`: the task's state, and once ended its answer in JSON. */
export function viewOf(task: StoredTask): TaskView {
  const { result } = task
  const view: TaskView = {
    task_id: task.task_id,
    state: task.state,
    mode: task.mode,
    region: task.region,
    node_id: result?.node_id ?? null,
    attempts: result?.attempts ?? [],
    submitted_at: new Date(task.submitted_at_ms).toISOString(),
    finished_at: task.finished_at_ms === null ? null : new Date(task.finished_at_ms).toISOString(),
  }
  if (task.trace !== undefined) view.trace_id = task.trace.trace_id
  if (!result) return view
  const body = Buffer.from(result.body_b64, 'base64')
  const content = decodeBody(body, result.headers['content-type'])
  if (result.state === 'done') return { ...view, status: result.status, headers: result.headers, response: content }
  return { ...view, status: result.status, error: content }
}

/** A JSON body as its value; any other text as a string; bytes that are not UTF-8 as base64 (see utf8OrBase64). */
function decodeBody(body: Buffer, contentType: string | undefined): unknown {
  const text = utf8OrBase64(body)
  if (typeof text !== 'string') return text
  if (contentType?.includes('json')) {
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }
  return text
}
