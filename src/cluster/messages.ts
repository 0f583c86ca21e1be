import { z } from 'zod'
import type { Client, ClientAnnouncement } from '../fleet/registry.ts'
import { attemptFailureSchema } from '../wire/errors.ts'
import { healthStateSchema, maxInFlightSchema, nameSchema, prioritySchema, protocolSchema, schemeSchema, weightSchema } from '../wire/names.ts'

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
  /**
   * Drained by an operator at its holder (its weight is shared as 0 too, for older versions): the others
   * keep the drain should the node come back to one of them (src/fleet/registry.ts Registry.kept).
   */
  drained: z.boolean().optional(),
  /** Ejected by an operator at its holder until then (ms since the epoch): the others send it nothing either until then. */
  ejected_until: z.number().positive().optional(),
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
    ...(client.operatorDrained ? { drained: true } : {}),
    // Health's own ejections are each instance's verdict; an operator's is the cluster's.
    ...(client.state === 'ejected' && client.ejectedUntil === client.operatorEjectedUntil ? { ejected_until: client.ejectedUntil } : {}),
  }
}

/** Another instance's client, as this registry records it (its health verdict is kept beside, not in it). */
export function announcementOf(instance: string, shared: SharedClient): ClientAnnouncement {
  const { node_id, holder, region, protocol, ip, port, scheme, weight, max_in_flight, full, drained } = shared
  return {
    instance,
    holder,
    nodeId: node_id,
    region,
    protocol,
    ip,
    port,
    scheme,
    weight,
    maxInFlight: max_in_flight,
    holderFull: full === true,
    operatorDrained: drained === true,
  }
}

const instanceIdSchema = z.string().min(1).max(256)

/** An instance as the others see it: its presence key's value, checked when read (a value of another shape is not an instance). */
export const instanceInfoSchema = z.object({
  instance_id: instanceIdSchema,
  /** This run of the process: one started again under the same id is another. */
  incarnation: z.string().min(1).max(64),
  advertise_url: z.string().max(65_536),
  started_at: z.string().max(64),
  clients: z.number().int().min(0),
  in_flight: z.number().int().min(0),
  refreshed_at: z.string().max(64),
  /** It reads relay batches (relayBatch); absent from an older version, which must never be sent one. */
  relay_batch: z.boolean().optional(),
  /** In its grace period after a graceful stop: no clients of its own any more, finishing what was relayed to it. */
  stopping: z.boolean().optional(),
})
export type InstanceInfo = z.infer<typeof instanceInfoSchema>
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/
const TRACESTATE = /^[\x20-\x7e]*$/

export const fleetMessageSchema = z.discriminatedUnion('op', [
  z.object({ instance: instanceIdSchema, op: z.literal('set'), client: sharedClientSchema }),
  z.object({ instance: instanceIdSchema, op: z.literal('del'), node_id: z.string() }),
  // A reset names the process (its presence's incarnation): one started again under the same id is told apart at once.
  z.object({ instance: instanceIdSchema, op: z.literal('reset'), incarnation: z.string().max(64).optional(), started_at: z.string().max(64).optional() }),
  // gone: a graceful stop began (its clients take no new tasks, what was relayed to it finishes there);
  // stopped: its grace period is over, and what is still relayed to it fails over now.
  z.object({ instance: instanceIdSchema, op: z.enum(['gone', 'stopped']) }),
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
  traceparent: z.string().regex(TRACEPARENT).optional(),
  tracestate: z.string().regex(TRACESTATE).optional(),
  /** The task's class and its own queue_timeout, should it wait here for the agent's slot; absent: normal, and queue.timeout here. */
  priority: prioritySchema.optional(),
  queue_timeout_ms: z.number().int().min(1).optional(),
  /**
   * The origin reads an answer sent as its envelope, a newline and the body's own text (see
   * replyText), so the body is neither escaped here nor unescaped there. An origin that does not
   * say so gets the whole reply as one JSON object, the body in it as a string.
   */
  raw_answer: z.literal(true).optional(),
  /** The origin reads a large answer's body from the key a reply names (`body_ref`); an origin that does not say so gets it inline. */
  answer_ref: z.literal(true).optional(),
  /**
   * Not a task: is the agent `node_id` still there (a ping and its pong, as for a register of its id
   * here)? Answered with status 200 if so, an `unreachable` failure if not — which is also what an older
   * holder, that reads no `probe`, answers a message without a payload.
   */
  probe: z.literal(true).optional(),
  /**
   * The origin reads several replies in one message (a relay batch, see relayBatch): the holder may
   * send the answers to this origin ready in one turn together. An origin that does not say so gets
   * one message per reply.
   */
  batch_replies: z.literal(true).optional(),
})
export type RelayRequest = z.infer<typeof relayRequestSchema>

/** What the holder sends back for one relayed attempt. */
export const relayReplySchema = z.object({
  key: z.string(),
  status: z.number().int().min(100).max(599).optional(),
  headers: z.record(z.string(), z.string()).optional(),
  /** The answer's body, in a reply of one JSON object (after the envelope's newline otherwise). */
  body: z.string().optional(),
  /** The agent's `retry: false` on a 5xx, carried back to the dispatcher at the origin. */
  retry: z.literal(false).optional(),
  error: z.string().optional(),
  kind: attemptFailureSchema.exclude(['status', 'internal']).optional(),
  /** Never sent: the agent's slots stayed full at the holder for queue.timeout. Says nothing of the agent's health. */
  full: z.literal(true).optional(),
  /** A large answer's body is in this key (ClusterKeys.spilled), in `body_parts` parts, not in the reply: pub/sub messages stay small (src/cluster/spill.ts). */
  body_ref: z.string().min(1).max(1024).optional(),
  body_parts: z.number().int().min(1).max(1_000_000).optional(),
})
export type RelayReply = z.infer<typeof relayReplySchema>

/**
 * A relayed task, checked: the common shape by hand, anything else (and every refusal) by zod.
 * Every relayed task is read here, and zod costs a few µs and ~40 cells on each.
 */
export function readRelayRequest(text: string): RelayRequest | undefined {
  const value = parsed(text)
  if (value === undefined) return undefined
  return commonRelayRequest(value) ?? checked(relayRequestSchema, value)
}

/**
 * relayRequestSchema's result for a message it certainly accepts, checked by hand: an object whose
 * every key is the schema's (or `payload`, read from the text by the holder), each of the right type.
 * Undefined for anything else, for zod to decide. The object is fresh from JSON.parse and is returned
 * itself, its payload still in it (zod's copy leaves it out). test/unit/cluster/messages.test.ts holds
 * the two to the same answers.
 */
export function commonRelayRequest(value: unknown): RelayRequest | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const message = value as Record<string, unknown>
  let required = 0
  for (const key in message) {
    const field = message[key]
    switch (key) {
      case 'origin':
        if (typeof field !== 'string' || field.length < 1 || field.length > 256) return undefined
        required++
        break
      case 'key':
      case 'task_id':
      case 'node_id':
        if (typeof field !== 'string') return undefined
        required++
        break
      case 'timeout_ms':
        if (!Number.isSafeInteger(field) || (field as number) < 1) return undefined
        required++
        break
      case 'traceparent':
        if (typeof field !== 'string' || !TRACEPARENT.test(field)) return undefined
        break
      case 'tracestate':
        if (typeof field !== 'string' || !TRACESTATE.test(field)) return undefined
        break
      case 'raw_answer':
      case 'answer_ref':
      case 'batch_replies':
        if (field !== true) return undefined
        break
      case 'priority':
        if (field !== 'high' && field !== 'normal' && field !== 'low') return undefined
        break
      case 'queue_timeout_ms':
        if (!Number.isSafeInteger(field) || (field as number) < 1) return undefined
        break
      case 'payload':
        break
      default:
        return undefined
    }
  }
  return required === 5 ? (message as RelayRequest) : undefined
}

/**
 * A reply to a relayed attempt and its body: one JSON object (the body a string in it), or an
 * envelope, a newline and the body's own text (replyText). JSON.stringify never writes a newline,
 * so the first one ends the envelope; an envelope that also carries `body` is refused as ambiguous.
 */
export function readRelayReply(text: string): { reply: RelayReply; body: string | undefined } | undefined {
  const newline = text.indexOf('\n')
  const value = parsed(newline === -1 ? text : text.slice(0, newline))
  if (value === undefined) return undefined
  const reply = commonRelayReply(value) ?? checked(relayReplySchema, value)
  if (reply === undefined) return undefined
  if (newline === -1) return { reply, body: reply.body }
  if (reply.body !== undefined) return undefined
  return { reply, body: text.slice(newline + 1) }
}

/**
 * relayReplySchema's result for the common reply, an answer (key, status, headers, perhaps
 * `retry: false`), checked by hand; undefined for anything else (failures among them), which zod
 * decides. Returned itself, as commonRelayRequest's is; the same unit test holds it to zod's answers.
 */
export function commonRelayReply(value: unknown): RelayReply | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const message = value as Record<string, unknown>
  let hasKey = false
  for (const key in message) {
    const field = message[key]
    switch (key) {
      case 'key':
        if (typeof field !== 'string') return undefined
        hasKey = true
        break
      case 'status':
        if (!Number.isSafeInteger(field) || (field as number) < 100 || (field as number) > 599) return undefined
        break
      case 'headers':
        if (!isStringRecord(field)) return undefined
        break
      case 'body':
        if (typeof field !== 'string') return undefined
        break
      case 'retry':
        if (field !== false) return undefined
        break
      default:
        return undefined
    }
  }
  return hasKey ? (message as RelayReply) : undefined
}

/** A plain object of string values, with no key zod's record would copy differently. */
function isStringRecord(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  const record = value as Record<string, unknown>
  for (const key in record) if (typeof record[key] !== 'string' || key === '__proto__') return false
  return true
}

/**
 * A successful answer's reply: its envelope as JSON, a newline, and the body as it is (for an origin
 * that asked for it with `raw_answer`; one JSON object otherwise, as every version reads).
 */
export function replyText(envelope: RelayReply, body: string, raw: boolean): string {
  return raw ? `${JSON.stringify(envelope)}\n${body}` : JSON.stringify({ ...envelope, body })
}

/**
 * Several relay messages (requests to one holder, or replies to one origin) as one Redis message: a
 * JSON array of their lengths, a newline, and the messages' own texts one after the other. A single
 * message is a JSON object, so the first character tells the two apart; an instance that does not
 * read batches would fail to parse one and drop it, but is never sent one (it does not advertise
 * `relay_batch` in its presence, nor ask for `batch_replies`). Each member is checked on its own
 * afterwards, so a bad member is dropped alone.
 */
export function relayBatch(members: readonly string[]): string {
  let lengths = ''
  for (const member of members) lengths += lengths === '' ? member.length : `,${member.length}`
  return `[${lengths}]\n${members.join('')}`
}

/**
 * Relay messages as Redis messages: those ready together go as batches of at most
 * RELAY_MESSAGE_MAX_CHARS each (a member larger than that alone), never one batch of any size. Redis
 * cuts a subscriber whose unread messages pass `client-output-buffer-limit pubsub` (32 MB, or 8 MB for
 * a minute, by default), and that would fail every task relayed to or from that instance. Each
 * message says which members it carries (`from` to `to`, exclusive).
 */
export function relayMessages(members: readonly string[]): Array<{ text: string; from: number; to: number }> {
  const messages: Array<{ text: string; from: number; to: number }> = []
  const close = (from: number, to: number) => messages.push({ text: to - from === 1 ? members[from]! : relayBatch(members.slice(from, to)), from, to })
  let from = 0
  let chars = 0
  for (let i = 0; i < members.length; i++) {
    const length = members[i]!.length
    if (i > from && chars + length > RELAY_MESSAGE_MAX_CHARS) {
      close(from, i)
      from = i
      chars = 0
    }
    chars += length
  }
  if (members.length > from) close(from, members.length)
  return messages
}

/** See relayMessages: well under Redis's default pub/sub limits, and far above what most relayed tasks and answers weigh. */
export const RELAY_MESSAGE_MAX_CHARS = 1024 * 1024

/**
 * The messages a Redis message carries: itself if it is a single one, the members if it is a batch
 * (relayBatch), none if it is a batch whose lengths do not describe its text (nothing in it can be
 * told apart, so all of it is dropped).
 */
export function relayMembers(text: string): string[] {
  if (text.charCodeAt(0) !== 91 /* [ */) return [text]
  const newline = text.indexOf('\n')
  if (newline === -1) return []
  const lengths = parsed(text.slice(0, newline))
  if (!Array.isArray(lengths)) return []
  const members: string[] = []
  let at = newline + 1
  for (const length of lengths) {
    if (!Number.isSafeInteger(length) || length < 0 || at + length > text.length) return []
    members.push(text.slice(at, at + length))
    at += length
  }
  return at === text.length ? members : []
}

function parsed(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

function checked<Schema extends z.ZodType>(schema: Schema, value: unknown): z.infer<Schema> | undefined {
  const result = schema.safeParse(value)
  return result.success ? result.data : undefined
}

/** `text` parsed and of `schema`'s shape, or undefined. */
export function readMessage<Schema extends z.ZodType>(schema: Schema, text: string): z.infer<Schema> | undefined {
  const value = parsed(text)
  return value === undefined ? undefined : checked(schema, value)
}
