import { z } from 'zod'
import type { Client, ClientAnnouncement } from '../fleet/registry.ts'
import { attemptFailureSchema } from '../wire/errors.ts'
import { healthStateSchema, maxInFlightSchema, nameSchema, protocolSchema, schemeSchema, weightSchema } from '../wire/names.ts'

/**
 * What one instance accepts from another over Redis, checked before anything reads it. A message is
 * another process's text: `null`, a record of another version, or a half-written one must be dropped,
 * never read as if it had the expected shape (a TypeError in a subscription callback ends the
 * process, and an ill-typed client would be balanced over and shown as if it were real).
 */

/** A client as its holder announces it (the fleet channel and the clients hash). */
export const sharedClientSchema = z.object({
  node_id: nameSchema,
  region: nameSchema,
  protocol: protocolSchema,
  ip: z.string().max(255),
  port: z.number().int().min(0).max(65_535),
  scheme: schemeSchema,
  weight: weightSchema,
  holder: z.string().max(128),
  /** The holder's own verdict on its health. */
  state: healthStateSchema,
  /** Its slots, as the agent announced them. */
  max_in_flight: maxInFlightSchema.optional(),
  /** A WebSocket agent whose slots are all taken at its holder: the others send it nothing until it has room. */
  full: z.boolean().optional(),
})
export type SharedClient = z.infer<typeof sharedClientSchema>

/** A client held here, as the other instances are told of it. */
export function share(client: Client): SharedClient {
  return {
    node_id: client.nodeId,
    region: client.region,
    protocol: client.protocol,
    ip: client.ip,
    port: client.port,
    scheme: client.scheme,
    // Drained by an operator here: the other instances must not send it tasks either.
    weight: client.operatorDrained ? 0 : client.weight,
    holder: client.holder,
    state: client.state,
    ...(client.maxInFlight === undefined ? {} : { max_in_flight: client.maxInFlight }),
    // What the registry last said of it (src/fleet/registry.ts noteFull), so a later "room again" is never skipped as no change.
    ...(client.sharedFull === true && client.route === 'ws' ? { full: true } : {}),
  }
}

/** Another instance's client, as this registry records it (its health verdict is kept beside, not in it). */
export function announcementOf(instance: string, shared: SharedClient): ClientAnnouncement {
  const { node_id, holder, region, protocol, ip, port, scheme, weight, max_in_flight, full } = shared
  return { instance, holder, nodeId: node_id, region, protocol, ip, port, scheme, weight, maxInFlight: max_in_flight, holderFull: full === true }
}

const instanceIdSchema = z.string().min(1).max(256)

export const fleetMessageSchema = z.discriminatedUnion('op', [
  z.object({ instance: instanceIdSchema, op: z.literal('set'), client: sharedClientSchema }),
  z.object({ instance: instanceIdSchema, op: z.literal('del'), node_id: z.string() }),
  z.object({ instance: instanceIdSchema, op: z.enum(['reset', 'gone']) }),
])
export type FleetMessage = z.infer<typeof fleetMessageSchema>

/** A task relayed to this instance's WebSocket agents (its payload is read as its own text, not from here). */
export const relayRequestSchema = z.object({
  origin: instanceIdSchema,
  key: z.string(),
  task_id: z.string(),
  node_id: z.string(),
  timeout_ms: z.number().int().min(1),
  /** The trace context the agent gets, as the origin made it; checked here too, as it goes into a frame. */
  traceparent: z
    .string()
    .regex(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/)
    .optional(),
  tracestate: z
    .string()
    .regex(/^[\x20-\x7e]*$/)
    .optional(),
})

/** What the holder sends back for one relayed attempt. */
export const relayReplySchema = z.object({
  key: z.string(),
  status: z.number().int().min(100).max(599).optional(),
  headers: z.record(z.string(), z.string()).optional(),
  body: z.string().optional(),
  /** The agent's `retry: false` on a 5xx, carried back to the dispatcher at the origin. */
  retry: z.literal(false).optional(),
  error: z.string().optional(),
  kind: attemptFailureSchema.exclude(['status']).optional(),
  /** Never sent: the agent's slots stayed full at the holder for queue.timeout. Says nothing of the agent's health. */
  full: z.literal(true).optional(),
})
export type RelayReply = z.infer<typeof relayReplySchema>

/** `text` parsed and of `schema`'s shape, or undefined. */
export function readMessage<Schema extends z.ZodType>(schema: Schema, text: string): z.infer<Schema> | undefined {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  const result = schema.safeParse(value)
  return result.success ? result.data : undefined
}
