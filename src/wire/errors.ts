import { z } from 'zod'

/** Every machine code an HTTP error body or a WebSocket error frame carries (documented in docs/http-api.md and docs/websocket-protocol.md). */
export const errorCodeSchema = z.enum([
  // HTTP
  'invalid_json',
  'invalid_body',
  'too_deep',
  'unauthorized',
  'address_not_allowed',
  'node_id_in_use',
  'forbidden_origin',
  'forbidden',
  'too_many_failures',
  'not_found',
  'body_too_large',
  'unsupported_media_type',
  'upgrade_required',
  'bad_request',
  'no_client',
  // A task's node_id names no client (404), or one that cannot take tasks now: ejected, on trial or draining (503)
  'unknown_node',
  'node_unavailable',
  // An operator action on a client another instance of the cluster holds: send it there (409, names the instance)
  'held_elsewhere',
  'all_attempts_failed',
  'answer_too_large',
  'timeout',
  'shutting_down',
  // Every agent of the task's pool was full (its slots taken) and the task could not wait: too long (queue.timeout) or too many waiting (queue.max); 503 with Retry-After
  'queue_timeout',
  'queue_full',
  'too_many_clients',
  'too_many_connections',
  'too_many_unregistered',
  'internal',
  // Stored tasks (mode async, Idempotency-Key); unknown_task below serves both
  'idempotency_mismatch',
  'task_ended',
  'not_ready',
  'cancelled',
  'too_many_tasks',
  'store_unavailable',
  // An HTTP agent refusing an unsigned or badly signed call (moonlight agent --http --signing-secret)
  'invalid_signature',
  // WebSocket frames
  'invalid_message',
  'invalid_token',
  'not_registered',
  'already_registered',
  'unknown_task',
  'register_timeout',
  'binary_not_supported',
])
export type ErrorCode = z.infer<typeof errorCodeSchema>

/**
 * How an attempt failed: the transport's reasons, `status` for a 5xx answer, or `internal` for a
 * server bug (only in a client's recent tasks: such a task's caller gets `500 internal`, no attempts).
 */
export const attemptFailureSchema = z.enum([
  'unreachable',
  'disconnected',
  'dropped',
  'invalid_answer',
  'refused',
  'timeout',
  'too_large',
  'status',
  'internal',
])
export type AttemptFailure = z.infer<typeof attemptFailureSchema>

/**
 * The attempt failures a task may be retried after (Envoy's `retry_on`, HAProxy's `retry-on`):
 * `unreachable`, the agent never got the task; `lost`, the task was sent and no usable answer came
 * back (the connection, the agent or the instance holding it went away); `status`, a 5xx answer.
 * Retrying after `lost` or `status` may run the task twice. A timeout is never retried.
 */
export const retryOnSchema = z.enum(['unreachable', 'lost', 'status'])
export type RetryOn = z.infer<typeof retryOnSchema>

/** One failed attempt of a task, as 502 and 504 bodies list them. */
export const failedAttemptSchema = z.object({
  node_id: z.string(),
  kind: attemptFailureSchema,
  /** Why, in words. Names agent addresses only for callers with the monitor role. */
  reason: z.string(),
  status: z.number().int().optional(),
  /** The start of a 5xx answer's body: usually the client's own account of what went wrong. */
  body: z.string().optional(),
})
export type FailedAttempt = z.infer<typeof failedAttemptSchema>

/** Every HTTP error: `{ error, code, ...details }`. Details depend on the code (issues, region, attempts, limits). */
export const errorBodySchema = z.looseObject({
  error: z.string(),
  code: z.string(),
  issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  region: z.string().optional(),
  attempts: z.array(failedAttemptSchema).optional(),
  /** 502 all_attempts_failed: the class of the last failure, which the task's retry_on leaves out, so it was not retried. */
  not_retried: retryOnSchema.optional(),
  /** 503 no_client for a token limited to regions: the highest region its tasks may reach; none is sent outside it. */
  boundary: z.string().optional(),
})
export type ErrorBody = z.infer<typeof errorBodySchema>

/** A WebSocket `error` frame, to an agent or a dashboard. */
export const errorFrameSchema = z.object({
  type: z.literal('error'),
  payload: z.object({ message: z.string(), code: z.string() }),
})
export type ErrorFrame = z.infer<typeof errorFrameSchema>
