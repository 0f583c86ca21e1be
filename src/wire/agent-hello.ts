import { z } from 'zod'
import { maxInFlightSchema, nameSchema, schemeSchema, weightSchema } from './names.ts'

/** What an agent says about itself: the HTTP heartbeat body and the WebSocket register payload. */
export const clientHelloSchema = z.object({
  // It becomes http://ip:port/work: an IPv4 or IPv6 address or a host name, nothing that could reshape the URL.
  ip: z
    .string()
    .max(255)
    .regex(
      /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$/,
      'must be an IP address or a host name',
    )
    .optional(),
  node_id: nameSchema,
  token: z.string().min(1),
  region: nameSchema,
  port: z.number().int().min(1).max(65535).optional(),
  weight: weightSchema.optional(),
  /** Its slots: at most this many of its tasks in flight at once; absent, no limit. A later hello may change it. */
  max_in_flight: maxInFlightSchema.optional(),
})
export type ClientHello = z.infer<typeof clientHelloSchema>

/** `POST /client/heartbeat`: an HTTP client must say which port its /work listens on, and may serve it over TLS (`scheme: "https"`). */
export const heartbeatSchema = clientHelloSchema.extend({ port: z.number().int().min(1).max(65535), scheme: schemeSchema.optional() })
export type Heartbeat = z.infer<typeof heartbeatSchema>

/** The server's answer to a heartbeat, as an HTTP agent reads it. */
export const heartbeatReplySchema = z.object({
  status: z.literal('ok'),
  server_time: z.string(),
  node_id: z.string(),
  region: z.string(),
  weight: z.number(),
  client_ttl: z.number().positive(),
})
export type HeartbeatReply = z.infer<typeof heartbeatReplySchema>
