import { z } from 'zod'
import { attemptFailureSchema } from './errors.ts'
import { nameSchema, protocolSchema } from './names.ts'

/** `POST /task/request`. */
export const taskRequestSchema = z.object({
  region: z.union([nameSchema, z.literal('')]).optional(),
  payload: z.unknown().refine((value) => value !== undefined, 'payload is required'),
  /** `async`: answered 202 at once with the task's id; the answer is fetched later from GET /task/{id}/result. */
  mode: z.enum(['single', 'broadcast', 'async']).default('single'),
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
