import { z } from 'zod'
import type { TraceHeaders } from '../observe/tracing/trace-context.ts'
import { clientHelloSchema } from './agent-hello.ts'
import { errorFrameSchema } from './errors.ts'
import { maxInFlightSchema, type PayloadFormat, payloadFormatSchema, weightSchema } from './names.ts'

/**
 * What an HTTP response can carry (RFC 9110 §5.5): a token for the name; for the value visible
 * characters, spaces and tabs, and obs-text (0x80-0xFF), nothing else. A control character would
 * break the caller's response, and a character beyond Latin-1 cannot be written as a header at all.
 */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/
const headerName = z.string().regex(HEADER_NAME, 'not a valid header name')
const headerValue = z.string().regex(HEADER_VALUE, 'header values may hold only visible characters, spaces, tabs and Latin-1 (no control characters)')

/** A client's answer to one task. */
export const taskResponseSchema = z.object({
  task_id: z.string().min(1),
  response: z.unknown(),
  // 1xx are interim responses, not answers.
  status: z.number().int().min(200).max(599).default(200),
  headers: z.record(headerName, headerValue).default({}),
  /** false: this 5xx must not be retried on another client (the work may have been done in part). */
  retry: z.boolean().optional(),
})
export type TaskResponse = z.infer<typeof taskResponseSchema>

/** The headers of an answer that sent none: shared by every such answer, so frozen (readers copy what passes). */
const NO_HEADERS: Record<string, string> = Object.freeze({})

/**
 * wsInboundSchema's result for a task_response it certainly accepts, checked by hand: `type` and
 * `payload` alone, the payload's every key one of taskResponseSchema's, each of the right type, with
 * its task_id and response.
 * Undefined for anything else, which zod then checks and words the errors of. The parsed message is
 * fresh from JSON.parse and ours: it becomes the result (status and headers defaulted), as zod's copy
 * would read. test/unit/ws/task-response.test.ts holds the two to the same answers.
 */
export function commonTaskResponse(message: unknown): { type: 'task_response'; payload: TaskResponse } | undefined {
  if (typeof message !== 'object' || message === null) return undefined
  const outer = message as Record<string, unknown>
  if (outer.type !== 'task_response') return undefined
  for (const key in outer) if (key !== 'type' && key !== 'payload') return undefined
  const payload = outer.payload
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return undefined
  const answer = payload as Record<string, unknown>
  // zod requires both keys, though `response` may be null.
  let hasTaskId = false
  let hasResponse = false
  for (const key in answer) {
    const value = answer[key]
    switch (key) {
      case 'task_id':
        if (typeof value !== 'string' || value.length === 0) return undefined
        hasTaskId = true
        break
      case 'response':
        hasResponse = true
        break
      case 'status':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 200 || value > 599) return undefined
        break
      case 'headers':
        if (!isHeaderRecord(value)) return undefined
        break
      case 'retry':
        if (typeof value !== 'boolean') return undefined
        break
      default:
        return undefined
    }
  }
  if (!hasTaskId || !hasResponse) return undefined
  answer.status ??= 200
  answer.headers ??= NO_HEADERS
  return outer as { type: 'task_response'; payload: TaskResponse }
}

/** The header record's rule: names and values as headerName and headerValue say. "__proto__" is left to zod, whose record copies keys by assignment. */
function isHeaderRecord(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  const headers = value as Record<string, unknown>
  for (const name in headers) {
    const header = headers[name]
    if (name === '__proto__' || typeof header !== 'string' || !HEADER_NAME.test(name) || !HEADER_VALUE.test(header)) return false
  }
  return true
}

/**
 * A WebSocket agent's `register`: its hello, how it wants payloads, and the token — which may come
 * instead in the URL's `?token=`, as the original Moonlight's clients send it.
 */
export const wsRegisterSchema = clientHelloSchema.extend({ token: z.string().min(1).optional(), payload_format: payloadFormatSchema.optional() })
export type WsRegister = z.infer<typeof wsRegisterSchema>

/** Messages a WebSocket peer may send the server. `monitor` is the dashboard joining the live feed. */
export const wsInboundSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('register'), payload: wsRegisterSchema }),
  z.object({ type: z.literal('heartbeat'), payload: z.object({ weight: weightSchema.optional(), max_in_flight: maxInFlightSchema.optional() }).optional() }),
  z.object({ type: z.literal('task_response'), payload: taskResponseSchema }),
  z.object({ type: z.literal('monitor'), payload: z.object({ token: z.string().min(1) }) }),
])
export type WsInbound = z.infer<typeof wsInboundSchema>

export const registeredSchema = z.object({
  type: z.literal('registered'),
  payload: z.object({
    node_id: z.string(),
    region: z.string(),
    weight: z.number(),
    heartbeat_interval: z.number().positive(),
    server_time: z.string(),
    /** How this agent's task payloads come: its register's choice, else ws.payload_format. */
    payload_format: payloadFormatSchema.optional(),
    /** Its slots as the server counts them (the register's max_in_flight); absent: no limit. */
    max_in_flight: z.number().int().optional(),
  }),
})
export type Registered = z.infer<typeof registeredSchema>

export const heartbeatAckSchema = z.object({
  type: z.literal('heartbeat_ack'),
  /** max_in_flight: the agent's slots as the server counts them after this heartbeat; absent, no limit. */
  payload: z.object({ server_time: z.string(), max_in_flight: z.number().int().optional() }),
})
export type HeartbeatAck = z.infer<typeof heartbeatAckSchema>

/** A task for an agent; the server writes it by hand around the payload's own text (see taskFrame). */
export const taskFrameSchema = z.object({
  type: z.literal('task'),
  task_id: z.string().min(1),
  /** W3C trace context (docs/operations.md#tracing): the caller's trace, with Moonlight's attempt span as the parent when tracing is on. */
  traceparent: z.string().optional(),
  tracestate: z.string().optional(),
  payload: z.unknown(),
})

/** A task the agent holds was cancelled (DELETE /task/{id}): it may stop; any answer it still sends is dropped. */
export const cancelFrameSchema = z.object({ type: z.literal('cancel'), task_id: z.string().min(1) })

/** Messages the server sends a WebSocket agent; the agent validates each one before acting on it. */
export const wsAgentInboundSchema = z.discriminatedUnion('type', [registeredSchema, heartbeatAckSchema, taskFrameSchema, cancelFrameSchema, errorFrameSchema])
export type WsAgentInbound = z.infer<typeof wsAgentInboundSchema>

export function cancelFrame(taskId: string): string {
  return JSON.stringify({ type: 'cancel', task_id: taskId })
}

/**
 * `{"type":"task",...}` around the payload's own text: it is never parsed or serialized again. In
 * the `string` format that text goes out as a JSON string, so the agent's `JSON.parse(payload)`
 * gives back the very value the caller sent.
 */
export function taskFrame(taskId: string, payloadJson: string, format: PayloadFormat = 'object', trace?: TraceHeaders): string {
  const payload = format === 'string' ? JSON.stringify(payloadJson) : payloadJson
  if (trace !== undefined) return `{"type":"task","task_id":${JSON.stringify(taskId)},${traceFields(trace)}"payload":${payload}}`
  return `{"type":"task","task_id":${JSON.stringify(taskId)},"payload":${payload}}`
}

/** `"traceparent":…,"tracestate":…,` for a frame: the values are checked ASCII, JSON.stringify quotes them. */
export function traceFields(trace: TraceHeaders): string {
  const state = trace.tracestate === undefined ? '' : `"tracestate":${JSON.stringify(trace.tracestate)},`
  return `"traceparent":${JSON.stringify(trace.traceparent)},${state}`
}
