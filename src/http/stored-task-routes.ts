import type { Hono } from 'hono'
import type { Settings } from '../config/settings.ts'
import { MoonlightError } from '../errors.ts'
import { type Grant, tokenDigest } from '../security/access.ts'
import type { StoredTasks } from '../tasks/stored/runner.ts'
import type { StoredTask } from '../tasks/stored/store.ts'
import { type AcceptedTask, FINAL_STATES, resultQuerySchema, type TaskView } from '../wire/async-task.ts'
import type { AppEnv } from './app.ts'
import { authorize, clientAddress, requestToken, validate } from './request-checks.ts'

/** How long a caller is told to wait before asking again for a result that is not ready. */
const RETRY_AFTER_S = 1

/**
 * `GET /task/{id}`, `GET /task/{id}/result` and `DELETE /task/{id}`: a stored task is its owner's
 * (the token that submitted it) or an admin's to see; to anyone else it does not exist.
 */
export function mountStoredTaskRoutes(app: Hono<AppEnv>, settings: Settings, tasks: StoredTasks): void {
  const own = async (request: Request, server: AppEnv['Bindings'], taskId: string, task: StoredTask | undefined): Promise<StoredTask> => {
    // The token is checked whether or not the task exists: a 401 for an id that exists and a 404 for
    // one that does not would tell a caller without a valid token which ids exist.
    const grant = settings.config.require_task_token
      ? authorize(settings, request.headers, 'submit', () => clientAddress(settings, server, request))
      : undefined
    if (task && mayRead(settings, request, grant, task)) return task
    throw unknownTask(taskId)
  }

  app.get('/task/:id', async (c) => {
    const taskId = c.req.param('id')
    const task = await own(c.req.raw, c.env, taskId, await tasks.get(taskId))
    return c.json(viewOf(task))
  })

  app.get('/task/:id/result', async (c) => {
    const taskId = c.req.param('id')
    const { wait } = validate(resultQuerySchema, c.req.query())
    // Owner first: a stranger's long poll must not hold a connection on someone else's task.
    let task = await own(c.req.raw, c.env, taskId, await tasks.get(taskId))
    if (wait !== undefined && !FINAL_STATES.has(task.state)) {
      c.env.timeout(c.req.raw, 0)
      task = (await tasks.wait(taskId, wait * 1000)) ?? task
    }
    return resultResponse(task, false)
  })

  app.delete('/task/:id', async (c) => {
    const taskId = c.req.param('id')
    await own(c.req.raw, c.env, taskId, await tasks.get(taskId))
    const before = await tasks.cancel(taskId)
    if (!before) throw unknownTask(taskId)
    if (FINAL_STATES.has(before.state)) {
      throw new MoonlightError(409, 'task_ended', `task ${taskId} has already ended (${before.state}): there is nothing to cancel`, {
        task_id: taskId,
        state: before.state,
      })
    }
    const after = await tasks.get(taskId)
    return c.json(viewOf(after ?? { ...before, state: 'cancelled' }))
  })
}

/** The SHA-256 of the request's token (any header that carries one): who a stored task belongs to. '' without a token. */
export function ownerOf(request: Request): string {
  const token = requestToken(request.headers)
  return token === '' ? '' : tokenDigest(token)
}

/** With tokens required (`grant`: the request's, still valid), the owner's token or an admin's; without, anyone who has the id. */
function mayRead(settings: Settings, request: Request, grant: Grant | undefined, task: StoredTask): boolean {
  if (grant === undefined) return true
  return ownerOf(request) === task.owner || settings.access.holds(grant, 'admin')
}

function unknownTask(taskId: string): MoonlightError {
  return new MoonlightError(404, 'unknown_task', `no task ${taskId}: it never existed, its result expired (tasks.result_ttl), or it is not yours`, {
    task_id: taskId,
  })
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
  if (!result) return view
  const body = Buffer.from(result.body_b64, 'base64')
  const content = decodeBody(body, result.headers['content-type'])
  if (result.state === 'done') return { ...view, status: result.status, headers: result.headers, response: content }
  return { ...view, status: result.status, error: content }
}

/** A JSON body as its value; any other text as a string; bytes that are not UTF-8 as base64. */
function decodeBody(body: Buffer, contentType: string | undefined): unknown {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body)
  } catch {
    return { base64: body.toString('base64') }
  }
  if (contentType?.includes('json')) {
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }
  return text
}
