import type { Config } from './config.ts'
import type { Priority } from './wire/names.ts'
import type { Fallback, TaskRequest } from './wire/task.ts'

/** How one task is routed: the per-task fields of `POST /task/request`, resolved against the config. */
export interface TaskRouting {
  /** Sticky routing: the key's rendezvous owner among the pool's clients (src/rendezvous.ts). */
  key?: string
  /** Exactly this client, no balancing. */
  nodeId?: string
  /** "none": the task's region and what is under it, never an ancestor's clients. */
  fallback: Fallback
  /** false: one attempt only. */
  retry: boolean
  /** This task's own timeout in ms, when it asks for one; the dispatcher never lets it pass task_timeout. */
  timeoutMs?: number
  /** Its class in the slot queue; absent: normal. */
  priority?: Priority
  /** How long it may wait for a slot, in ms, when it says (queue_timeout); never past its deadline. */
  queueTimeoutMs?: number
}

/** What a task without routing fields gets: today's behaviour, exactly. */
export const DEFAULT_ROUTING: TaskRouting = { fallback: 'parent', retry: true }

/**
 * A task's routing from its fields and the config's defaults. A named node is not retried unless the
 * caller says so: the caller asked for that one client, and a retry there after a 5xx is rarely
 * what it wants; retries never go to another client anyway.
 */
export function taskRouting(
  task: Pick<TaskRequest, 'key' | 'node_id' | 'fallback' | 'retry' | 'timeout' | 'priority' | 'queue_timeout'>,
  config: { routing: Pick<Config['routing'], 'fallback'> },
): TaskRouting {
  return {
    ...(task.key === undefined ? {} : { key: task.key }),
    ...(task.node_id === undefined ? {} : { nodeId: task.node_id }),
    fallback: task.fallback ?? config.routing.fallback,
    retry: task.retry ?? task.node_id === undefined,
    ...(task.timeout === undefined ? {} : { timeoutMs: task.timeout * 1000 }),
    ...(task.priority === undefined ? {} : { priority: task.priority }),
    ...(task.queue_timeout === undefined ? {} : { queueTimeoutMs: task.queue_timeout * 1000 }),
  }
}
