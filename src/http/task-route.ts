import type { Server } from 'bun'
import type { Config } from '../config/config.ts'
import type { Settings } from '../config/settings.ts'
import { errorResponse, MoonlightError, shuttingDown } from '../errors.ts'
import { Regions } from '../fleet/regions.ts'
import type { Tracer } from '../observe/tracing/tracer.ts'
import type { Broadcaster } from '../tasks/broadcast.ts'
import type { Dispatcher } from '../tasks/dispatcher.ts'
import type { TaskIds } from '../tasks/ids.ts'
import { scopeBoundary, taskRouting } from '../tasks/routing.ts'
import type { StoredTasks } from '../tasks/stored/runner.ts'
import type { StoredTask } from '../tasks/stored/store.ts'
import { FINAL_STATES, idempotencyKeySchema } from '../wire/async-task.ts'
import { afterUnreadBody } from './oversized-body.ts'
import { authorize, optionalGrant, readJsonText, requireUtf8 } from './request-checks.ts'
import { acceptedResponse, ownerOf, resultResponse } from './stored-task-answers.ts'
import { readTaskRequest } from './task-body.ts'
import { broadcastResponse, outcomeResponse } from './task-outcome.ts'

export interface TaskRouteDeps {
  settings: Settings
  dispatcher: Dispatcher
  broadcaster: Broadcaster
  taskIds: TaskIds
  storedTasks: StoredTasks
  /** The caller's W3C trace, continued (src/observe/tracing/). */
  tracer?: Tracer
  /** Wall-clock ms: when a stored task was submitted. */
  now: () => number
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
      const trace = deps.tracer?.fromHeaders(request.headers)
      // The token first, before the body is read; the region it may send to once the body says where.
      const grant = config.require_task_token ? authorize(settings, request, server, 'submit') : undefined
      const idempotencyKey = readIdempotencyKey(request.headers.get('idempotency-key'))
      const text = await readJsonText(request, config)
      // Bytes that were not UTF-8 are U+FFFD in the text; an ASCII text holds none, and is not scanned to see so.
      if (text.indexOf('\uFFFD') !== -1) requireUtf8(text, request)
      const { task, payloadJson } = readTaskRequest(text)
      if (deps.isStopping()) throw shuttingDown()
      const region = Regions.normalize(task.region)
      if (grant) settings.access.requireRegion(grant, 'submit', region)
      const nodeRegion = task.node_id === undefined ? undefined : deps.clientRegion?.(task.node_id)
      if (grant && nodeRegion !== undefined) settings.access.requireRegion(grant, 'submit', nodeRegion)
      const taskId = deps.taskIds.next()
      // Bun's idleTimeout (10 s) would cut a caller waiting on a slow agent; task_timeout bounds the wait instead.
      server.timeout(request, 0)
      // Agents' addresses and failure details are for operators (the monitor role): others get the node and a generic reason.
      const disclosure = settings.access.holds(grant ?? optionalGrant(settings, request, server), 'monitor') ? 'details' : 'generic'
      // A token limited to regions is a boundary its tasks never cross, stored with the task (async, replays) too.
      const routing = taskRouting(task, config, scopeBoundary(settings.regions, region, grant?.regions))
      if (task.mode === 'broadcast') {
        if (idempotencyKey !== undefined)
          throw new MoonlightError(400, 'bad_request', 'Idempotency-Key is for single and async tasks, not broadcasts (each client would answer anew)')
        return broadcastResponse(await deps.broadcaster.broadcast(region, payloadJson, taskId, routing.timeoutMs, trace), taskId, region, disclosure)
      }
      if (task.mode === 'async' || idempotencyKey !== undefined) {
        const mode = task.mode === 'async' ? 'async' : 'single'
        const idempotency = idempotencyKey === undefined ? undefined : { key: idempotencyKey, bodyHash: sha256(text) }
        // A replay whose task ended without reaching a client finds its key freed: it submits again, and runs
        // or waits on whichever request took the key then. Each round follows another request's whole run.
        for (let round = 1; ; round++) {
          const submitted = await deps.storedTasks.submit({
            task: {
              task_id: taskId,
              mode,
              region,
              payload: payloadJson,
              routing,
              owner: ownerOf(request),
              disclosure,
              submitted_at_ms: deps.now(),
              trace: trace?.stored(),
            },
            idempotency,
          })
          if (mode === 'async') return acceptedResponse(submitted.task, submitted.replayed)
          if (!submitted.replayed) return (await deps.storedTasks.runHere(submitted.task)) ?? resultResponse(submitted.task, false)
          const answer = await replay(deps.storedTasks, submitted.task, config, deps.now())
          if (answer !== undefined) return answer
          if (round === MAX_REPLAY_ROUNDS)
            throw new MoonlightError(
              503,
              'no_client',
              `the task of this Idempotency-Key ended without reaching a client ${round} times while this request waited on it; send it again`,
              { region },
              { 'retry-after': '1' },
            )
        }
      }
      return outcomeResponse(await deps.dispatcher.dispatch(region, payloadJson, taskId, routing, undefined, trace), taskId, disclosure, deps.instanceId?.())
    } catch (error) {
      // Refused before the body was read (a token, a content type): read it first, or a client still writing gets EPIPE.
      return afterUnreadBody(request, errorResponse(error, deps.report), settings.config)
    }
  }
}

/**
 * The same keyed sync request again: its answer, awaited while the first runs, never a second run —
 * unless the first's instance died with it: a run not finished within task_timeout + claim_margin
 * of its start is taken over here, as an async task's claim would be (the agent may then see it twice).
 * Undefined when the task is gone: it ended without reaching a client, and its key is free.
 */
async function replay(tasks: StoredTasks, task: StoredTask, config: Config, nowMs: number): Promise<Response | undefined> {
  const claimMs = (config.task_timeout + config.tasks.claim_margin) * 1000
  const settled = await tasks.wait(task.task_id, Math.max(0, task.submitted_at_ms + claimMs - nowMs))
  // Gone: it reached no client, so its key was freed and the task forgotten; the caller's request is free to run.
  if (settled === undefined) return undefined
  if (FINAL_STATES.has(settled.state)) return resultResponse(settled, true)
  const answer = await tasks.runHere(settled, true)
  if (answer !== undefined) return answer
  const now = await tasks.get(task.task_id)
  return now === undefined ? undefined : resultResponse(now, true)
}

/** Rounds of a replay that found its key freed (see the route): each one waited on another request's whole run. */
const MAX_REPLAY_ROUNDS = 3

function readIdempotencyKey(header: string | null): string | undefined {
  if (header === null) return undefined
  const parsed = idempotencyKeySchema.safeParse(header)
  if (!parsed.success) throw new MoonlightError(400, 'bad_request', `Idempotency-Key ${parsed.error.issues[0]?.message ?? 'is invalid'}`)
  return parsed.data
}

/** The body's SHA-256: a replayed key must come with the very same request. */
function sha256(text: string): string {
  return new Bun.CryptoHasher('sha256').update(text).digest('base64')
}
