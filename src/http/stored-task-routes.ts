import type { Hono } from 'hono'
import type { Settings } from '../config/settings.ts'
import { MoonlightError } from '../errors.ts'
import type { Grant } from '../security/access.ts'
import type { StoredTasks } from '../tasks/stored/runner.ts'
import type { StoredTask } from '../tasks/stored/store.ts'
import { FINAL_STATES, resultQuerySchema } from '../wire/async-task.ts'
import type { AppEnv } from './app.ts'
import { authorize, validate } from './request-checks.ts'
import { ownerOf, resultResponse, viewOf } from './stored-task-answers.ts'

/**
 * `GET /task/{id}`, `GET /task/{id}/result` and `DELETE /task/{id}`: a stored task is its owner's
 * (the token that submitted it) or an admin's to see; to anyone else it does not exist.
 */
export function mountStoredTaskRoutes(app: Hono<AppEnv>, settings: Settings, tasks: StoredTasks): void {
  const own = async (request: Request, server: AppEnv['Bindings'], taskId: string, task: StoredTask | undefined): Promise<StoredTask> => {
    // The token is checked whether or not the task exists: a 401 for an id that exists and a 404 for
    // one that does not would tell a caller without a valid token which ids exist.
    const grant = settings.config.require_task_token ? authorize(settings, request, server, 'submit') : undefined
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
    // Owner first: a stranger's long poll must not hold a connection on someone else's task, and a
    // caller without a token learns nothing of the route, not even which query it accepts.
    let task = await own(c.req.raw, c.env, taskId, await tasks.get(taskId))
    const { wait } = validate(resultQuerySchema, c.req.query(), 'query string')
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
