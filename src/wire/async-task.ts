import { z } from 'zod'
import { attemptFailureSchema } from './errors.ts'

/** Where a stored task is in its life. `queued` and `running` end in one of the other three, once. */
export const taskStateSchema = z.enum(['queued', 'running', 'done', 'failed', 'cancelled'])
export type TaskState = z.infer<typeof taskStateSchema>

/** States a task does not leave. */
export const FINAL_STATES: ReadonlySet<TaskState> = new Set(['done', 'failed', 'cancelled'])

/**
 * `Idempotency-Key`: up to 255 visible ASCII characters (Stripe's limit), so it can be a Redis key
 * part and a log field as it is.
 */
export const idempotencyKeySchema = z
  .string()
  .min(1, 'must not be empty')
  .max(255, 'must be at most 255 characters')
  .regex(/^[\x21-\x7e]+$/, 'must be visible ASCII characters (no spaces or control characters)')

/** `202` to `POST /task/request` with `"mode": "async"`. */
export const acceptedTaskSchema = z.object({
  task_id: z.string(),
  state: taskStateSchema,
  status_url: z.string(),
})
export type AcceptedTask = z.infer<typeof acceptedTaskSchema>

/** One attempt of a stored task: the client tried, and how it ended (a failure's kind and reason, or the status it answered). */
export const taskAttemptSchema = z.object({
  node_id: z.string(),
  status: z.number().int().optional(),
  kind: attemptFailureSchema.optional(),
  reason: z.string().optional(),
})
export type TaskAttempt = z.infer<typeof taskAttemptSchema>

/** `GET /task/{id}`. */
export const taskViewSchema = z.object({
  task_id: z.string(),
  state: taskStateSchema,
  mode: z.enum(['async', 'single']),
  region: z.string(),
  node_id: z.string().nullable(),
  attempts: z.array(taskAttemptSchema),
  submitted_at: z.string(),
  finished_at: z.string().nullable(),
  /** The W3C trace the task belongs to: the caller's `traceparent`'s, or one tracing started. */
  trace_id: z.string().optional(),
  /** Once done or failed: the status the result answers with. */
  status: z.number().int().optional(),
  /** Once done: the answer's headers as `GET /task/{id}/result` sends them. */
  headers: z.record(z.string(), z.string()).optional(),
  /** Once done: the agent's answer (its JSON value, or its text when it is not JSON). */
  response: z.unknown().optional(),
  /** Once failed: the error a sync caller would have got. */
  error: z.unknown().optional(),
})
export type TaskView = z.infer<typeof taskViewSchema>

/** `GET /task/{id}/result?wait=S`: hold the request up to S seconds (at most 60) for the task to finish. */
export const resultQuerySchema = z.object({
  wait: z.coerce.number().min(0).max(60).optional(),
})
