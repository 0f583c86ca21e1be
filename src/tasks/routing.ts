import type { Config } from '../config/config.ts'
import { MoonlightError } from '../errors.ts'
import type { Regions } from '../fleet/regions.ts'
import type { RetryOn } from '../wire/errors.ts'
import type { Priority } from '../wire/names.ts'
import { type Fallback, RETRY_ON_ALL, type TaskRequest } from '../wire/task.ts'

/** How one task is routed: the per-task fields of `POST /task/request`, resolved against the config. */
export interface TaskRouting {
  /** Sticky routing: the key's rendezvous owner among the pool's clients (src/fleet/rendezvous.ts). */
  key?: string
  /** Exactly this client, no balancing. */
  nodeId?: string
  /** "none": the task's region and what is under it, never an ancestor's clients. */
  fallback: Fallback
  /** false: one attempt only. */
  retry: boolean
  /** The attempt failures that may be retried; absent: all of them (unreachable, lost, status). */
  retryOn?: readonly RetryOn[]
  /** This task's own timeout in ms, when it asks for one; the dispatcher never lets it pass task_timeout. */
  timeoutMs?: number
  /** Its class in the slot queue; absent: normal. */
  priority?: Priority
  /** How long it may wait for a slot, in ms, when it says (queue_timeout); never past its deadline. */
  queueTimeoutMs?: number
  /**
   * The highest region the task may be sent to, with everything under it: the boundary of a token
   * limited to regions. No pick climbs past it, whatever `fallback` says.
   */
  boundary?: string
}

/** How a task waits for a slot: its priority class and its own queue_timeout (a relayed task carries them to its agent's holder). */
export type Queueing = Pick<TaskRouting, 'priority' | 'queueTimeoutMs'>

/** What a task without routing fields gets: today's behaviour, exactly. Shared by every such task, so frozen. */
export const DEFAULT_ROUTING: TaskRouting = Object.freeze({ fallback: 'parent', retry: true })

/**
 * A task's routing from its fields and the config's defaults. A named node is not retried unless the
 * caller says so: the caller asked for that one client, and a retry there after a 5xx is rarely
 * what it wants; retries never go to another client anyway. A task's `retry_on` may narrow the
 * config's routing.retry_on, never widen it: a 400 says which class the operator does not allow.
 */
export function taskRouting(
  task: Pick<TaskRequest, 'key' | 'node_id' | 'fallback' | 'retry' | 'retry_on' | 'timeout' | 'priority' | 'queue_timeout'>,
  /** The config's routing section; a retry_on left out allows every class. */
  config: { routing: Pick<Config['routing'], 'fallback'> & { retry_on?: readonly RetryOn[] | undefined } },
  boundary?: string,
): TaskRouting {
  const allowed = config.routing.retry_on ?? RETRY_ON_ALL
  // Nearly every task: no routing field, no boundary, the config's defaults. One shared object for them.
  if (boundary === undefined && config.routing.fallback === 'parent' && allowed.length === RETRY_ON_ALL.length && hasNoRoutingField(task))
    return DEFAULT_ROUTING
  const wider = task.retry_on?.find((each) => !allowed.includes(each))
  if (wider !== undefined)
    throw new MoonlightError(
      400,
      'invalid_body',
      `retry_on may only narrow the server's routing.retry_on (${JSON.stringify(allowed)}): "${wider}" is not in it`,
      {
        issues: [{ path: 'retry_on', message: `"${wider}" is not in the server's routing.retry_on` }],
      },
    )
  const retryOn = task.retry_on ?? allowed
  // Field by field rather than with spreads: this runs on every task.
  const routing: TaskRouting = { fallback: task.fallback ?? config.routing.fallback, retry: task.retry ?? task.node_id === undefined }
  if (task.key !== undefined) routing.key = task.key
  if (task.node_id !== undefined) routing.nodeId = task.node_id
  // Left out when it allows everything: the default routing, and every stored task of before, read the same.
  if (retryOn.length !== RETRY_ON_ALL.length) routing.retryOn = retryOn
  if (task.timeout !== undefined) routing.timeoutMs = task.timeout * 1000
  if (task.priority !== undefined) routing.priority = task.priority
  if (task.queue_timeout !== undefined) routing.queueTimeoutMs = task.queue_timeout * 1000
  if (boundary !== undefined) routing.boundary = boundary
  return routing
}

function hasNoRoutingField(task: Parameters<typeof taskRouting>[0]): boolean {
  return (
    task.key === undefined &&
    task.node_id === undefined &&
    task.fallback === undefined &&
    task.retry === undefined &&
    task.retry_on === undefined &&
    task.timeout === undefined &&
    task.priority === undefined &&
    task.queue_timeout === undefined
  )
}

/**
 * The boundary of a token limited to `scope` for a task to `region` (which the token was checked
 * to reach): the highest of its regions on the way from `region` to the root. Undefined for a token
 * without regions.
 */
export function scopeBoundary(regions: Regions, region: string, scope: readonly string[] | undefined): string | undefined {
  if (scope === undefined) return undefined
  let boundary: string | undefined
  for (const each of regions.chain(region)) if (scope.includes(each)) boundary = each
  return boundary
}
