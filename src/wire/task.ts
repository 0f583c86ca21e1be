import { z } from 'zod'
import { attemptFailureSchema, type RetryOn, retryOnSchema } from './errors.ts'
import { nameSchema, prioritySchema, protocolSchema } from './names.ts'

/** Whether a task whose region has no candidate may climb to the parent (today's behaviour) or must stay at or under it. */
export const fallbackSchema = z.enum(['parent', 'none'])
export type Fallback = z.infer<typeof fallbackSchema>

/** Every class: retries after any attempt failure, the behaviour before retry_on existed. */
export const RETRY_ON_ALL: readonly RetryOn[] = retryOnSchema.options

/** A retry_on list: each class at most once (a repeat is a mistake worth saying, not a no-op to hide). */
export const retryOnListSchema = z
  .array(retryOnSchema)
  .max(RETRY_ON_ALL.length)
  .refine((list) => new Set(list).size === list.length, 'lists a failure class twice')

/** Fields that choose one client among many: a broadcast goes to them all, so it takes none of them. */
export const SINGLE_ONLY = ['key', 'node_id', 'fallback', 'retry', 'retry_on', 'priority', 'queue_timeout'] as const

/**
 * `POST /task/request`. Every routing field is optional and its absence is the original behaviour,
 * so callers written before them keep working unchanged.
 */
export const taskRequestSchema = z
  .object({
    region: z.union([nameSchema, z.literal('')]).optional(),
    payload: z.unknown().refine((value) => value !== undefined, 'payload is required'),
    /** `async`: answered 202 at once with the task's id; the answer is fetched later from GET /task/{id}/result. */
    mode: z.enum(['single', 'broadcast', 'async']).default('single'),
    /** Sticky routing: tasks with the same key go to the same client while it is eligible (rendezvous hashing). */
    key: z.string().min(1).max(256).optional(),
    /** Exactly this client, no balancing. */
    node_id: nameSchema.optional(),
    /** Default: the config's routing.fallback. */
    fallback: fallbackSchema.optional(),
    /** false: never retried (work that must not run twice). Default: true, but false with node_id. */
    retry: z.boolean().optional(),
    /** The failures this task may be retried after; at most the config's routing.retry_on (narrower only). Default: the config's. */
    retry_on: retryOnListSchema
      .optional()
      .describe(
        'The attempt failures this task may be retried after: "unreachable" (the agent never got it), "lost" (sent, no usable answer came back: it may have run), "status" (a 5xx). Only narrower than the server\'s routing.retry_on (a wider list is a 400). ["unreachable"]: never sent twice.',
      ),
    /** Seconds; shorter than task_timeout to give up sooner (a longer one is cut to task_timeout). */
    timeout: z.number().positive().optional(),
    /** Its class in the queue that forms when every agent of its pool is full (docs/routing.md "Slots, the queue…"). Default: normal. */
    priority: prioritySchema.optional(),
    /** Seconds it may wait for a slot; default queue.timeout; never past its own timeout. */
    queue_timeout: z.number().positive().optional(),
  })
  .superRefine((task, ctx) => {
    if (task.mode !== 'broadcast') return
    for (const field of SINGLE_ONLY) {
      if (task[field] !== undefined)
        ctx.addIssue({ code: 'custom', path: [field], message: `"${field}" is for single tasks; a broadcast goes to every client` })
    }
  })
export type TaskRequest = z.infer<typeof taskRequestSchema>

/** What one client answered to a broadcast. */
export const broadcastResultSchema = z.object({
  node_id: z.string(),
  protocol: protocolSchema,
  status: z.number().int(),
  /** The client's answer: its JSON value, or its text when it is not JSON. */
  response: z.unknown().optional(),
  /** Why there is no answer (unreachable, timed out, too large, shutting down). */
  error: z.string().optional(),
  /** How the attempt failed, when it did. */
  kind: attemptFailureSchema.optional(),
})
export type BroadcastResult = z.infer<typeof broadcastResultSchema>

/** The answer to a broadcast: 200 if anyone answered, else 502. */
export const broadcastReplySchema = z.object({
  task_id: z.string(),
  region: z.string(),
  targets: z.number().int(),
  answered: z.number().int(),
  results: z.array(broadcastResultSchema),
})
export type BroadcastReply = z.infer<typeof broadcastReplySchema>

/** An HTTP agent's `retry: false`: `X-Moonlight-Retry: false` on a 5xx asks the server not to retry it elsewhere; never passed to the caller. */
export const NO_RETRY_HEADER = 'x-moonlight-retry'
