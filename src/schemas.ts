import { z } from 'zod'

/** Node ids and regions end up in logs, topics and the dashboard: keep them printable and short. */
const name = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\w.:@-]+$/, 'only letters, digits and . _ : @ - are allowed')

export const weightSchema = z.number().int().min(0).max(1000)

/** What an agent says about itself: the HTTP heartbeat body and the WebSocket register payload. */
export const clientHelloSchema = z.object({
  // It becomes http://ip:port/work: an IPv4 or IPv6 address or a host name, nothing that could reshape the URL.
  ip: z
    .string()
    .max(255)
    .regex(/^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$/, 'must be an IP address or a host name')
    .optional(),
  node_id: name,
  token: z.string().min(1),
  region: name,
  port: z.number().int().min(1).max(65535).optional(),
  weight: weightSchema.optional(),
})
export type ClientHello = z.infer<typeof clientHelloSchema>

/** An HTTP client must say which port its /work listens on. */
export const heartbeatSchema = clientHelloSchema.extend({ port: z.number().int().min(1).max(65535) })
export type Heartbeat = z.infer<typeof heartbeatSchema>

export const taskRequestSchema = z.object({
  region: z.union([name, z.literal('')]).optional(),
  payload: z.unknown().refine((value) => value !== undefined, 'payload is required'),
  mode: z.enum(['single', 'broadcast']).default('single'),
})
export type TaskRequest = z.infer<typeof taskRequestSchema>

/**
 * What an HTTP response can carry (RFC 9110 §5.5): a token for the name; for the value visible
 * characters, spaces and tabs, and obs-text (0x80-0xFF), nothing else. A control character would
 * break the caller's response, and a character beyond Latin-1 cannot be written as a header at all.
 */
const headerName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'not a valid header name')
const headerValue = z.string().regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'header values may hold only visible characters, spaces, tabs and Latin-1 (no control characters)')

export const taskResponseSchema = z.object({
  task_id: z.string().min(1),
  response: z.unknown(),
  // 1xx are interim responses, not answers.
  status: z.number().int().min(200).max(599).default(200),
  headers: z.record(headerName, headerValue).default({}),
})
export type TaskResponse = z.infer<typeof taskResponseSchema>

/** Messages a WebSocket peer may send. `monitor` is the dashboard joining the live feed. */
export const wsInboundSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('register'), payload: clientHelloSchema }),
  z.object({ type: z.literal('heartbeat'), payload: z.object({ weight: weightSchema.optional() }).optional() }),
  z.object({ type: z.literal('task_response'), payload: taskResponseSchema }),
  z.object({ type: z.literal('monitor'), payload: z.object({ token: z.string().min(1) }) }),
])
export type WsInbound = z.infer<typeof wsInboundSchema>

/** Messages the server sends a WebSocket agent; the agent validates each one before acting on it. */
export const wsAgentInboundSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('registered'),
    payload: z.object({ node_id: z.string(), region: z.string(), weight: z.number(), heartbeat_interval: z.number().positive(), server_time: z.string() }),
  }),
  z.object({ type: z.literal('heartbeat_ack'), payload: z.object({ server_time: z.string() }).optional() }),
  z.object({ type: z.literal('task'), task_id: z.string().min(1), payload: z.unknown() }),
  z.object({ type: z.literal('error'), payload: z.object({ message: z.string(), code: z.string().optional() }) }),
])
export type WsAgentInbound = z.infer<typeof wsAgentInboundSchema>

/** The server's answer to `POST /client/heartbeat`, as an HTTP agent reads it. */
export const heartbeatReplySchema = z.object({
  status: z.literal('ok'),
  server_time: z.string(),
  client_ttl: z.number().positive().optional(),
})
export type HeartbeatReply = z.infer<typeof heartbeatReplySchema>
