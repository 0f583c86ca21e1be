import type { Server } from 'bun'
import type { Broadcaster } from '../broadcast.ts'
import type { Dispatcher } from '../dispatcher.ts'
import { errorResponse, shuttingDown } from '../errors.ts'
import { Regions } from '../regions.ts'
import type { Settings } from '../settings.ts'
import type { TaskIds } from '../task-ids.ts'
import { taskRouting } from '../task-routing.ts'
import { authorize, bearerToken, clientAddress, readJsonText } from './request-checks.ts'
import { readTaskRequest } from './task-body.ts'
import { broadcastResponse, outcomeResponse } from './task-outcome.ts'

export interface TaskRouteDeps {
  settings: Settings
  dispatcher: Dispatcher
  broadcaster: Broadcaster
  taskIds: TaskIds
  isStopping: () => boolean
  report: (error: unknown) => void
  /** The region of a client by node id, if it is known: a token limited to regions may name only nodes in them. */
  clientRegion?: (nodeId: string) => string | undefined
  /** In cluster mode, this instance's id, named in X-Moonlight-Instance. */
  instanceId?: () => string
}

/**
 * `POST /task/request`, the one route for it, served from Bun's own router: Hono's per-request
 * context and middleware chain cost more than the rest of the proxying. Each rule is one named check
 * from request-checks.ts, the same the Hono routes use. Bun's router matches the path exactly (no
 * trailing slash, no percent-decoding), so it is not checked again.
 */
export function createTaskRoute(deps: TaskRouteDeps): (request: Request, server: Server<unknown>) => Promise<Response> {
  const { settings } = deps
  return async (request, server) => {
    try {
      const { config } = settings
      // The token first, before the body is read; the region it may send to once the body says where.
      const grant = config.require_task_token
        ? authorize(settings, request.headers.get('authorization'), 'submit', () => clientAddress(settings, server, request))
        : undefined
      const { task, payloadJson } = readTaskRequest(await readJsonText(request, config.max_body_bytes))
      if (deps.isStopping()) throw shuttingDown()
      const region = Regions.normalize(task.region)
      if (grant) settings.access.requireRegion(grant, 'submit', region)
      const nodeRegion = task.node_id === undefined ? undefined : deps.clientRegion?.(task.node_id)
      if (grant && nodeRegion !== undefined) settings.access.requireRegion(grant, 'submit', nodeRegion)
      const taskId = deps.taskIds.next()
      // Bun's idleTimeout (10 s) would cut a caller waiting on a slow agent; task_timeout bounds the wait instead.
      server.timeout(request, 0)
      // Agents' addresses and failure details are for operators (the monitor role): others get the node and a generic reason.
      const disclosure = settings.access.holds(grant ?? settings.access.peek(bearerToken(request.headers.get('authorization'))), 'monitor')
        ? 'details'
        : 'generic'
      const routing = taskRouting(task, config)
      if (task.mode === 'broadcast')
        return broadcastResponse(await deps.broadcaster.broadcast(region, payloadJson, taskId, routing.timeoutMs), taskId, region, disclosure)
      return outcomeResponse(await deps.dispatcher.dispatch(region, payloadJson, taskId, routing), taskId, disclosure, deps.instanceId?.())
    } catch (error) {
      return errorResponse(error, deps.report)
    }
  }
}
