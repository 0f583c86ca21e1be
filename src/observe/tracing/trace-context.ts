/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): reading a caller's `traceparent` and
 * writing the one an agent gets. Pure: ids come from the `random` passed in.
 */

/** A trace as it crosses Moonlight: the ids of the trace and of the span that is the next hop's parent. */
export interface TraceContext {
  /** 32 lowercase hex digits, not all zero. */
  traceId: string
  /** 16 lowercase hex digits, not all zero: the caller's span, or Moonlight's own. */
  spanId: string
  /** The trace-flags' sampled bit: whether the caller (or Moonlight) records this trace. */
  sampled: boolean
  /** The trace-flags' random-trace-id bit (Trace Context Level 2), set by the caller: passed on unchanged for its trace id. */
  random?: true
  /** The caller's `tracestate`, passed on as it came (Moonlight adds no entry of its own). */
  tracestate?: string
}

/**
 * A trace as a stored task keeps it (src/tasks/stored/), to be continued when the task runs, maybe
 * later and on another instance: the caller's span as the parent, if the caller sent one.
 */
export interface StoredTrace {
  trace_id: string
  parent_span_id?: string
  sampled: boolean
  random?: true
  tracestate?: string
}

/** What an agent is sent with one attempt: the header values as they go out. */
export interface TraceHeaders {
  traceparent: string
  tracestate?: string
}

// Version 00 exactly, lowercase hex as the spec requires; a later version is read by its first four fields (§3.2.4).
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/
/** The trace-flags bits Trace Context defines: sampled (Level 1) and random-trace-id (Level 2). */
const SAMPLED = 0x01
const RANDOM = 0x02
const ZERO_TRACE = '0'.repeat(32)
const ZERO_SPAN = '0'.repeat(16)
/** The spec bounds tracestate at 32 entries of at most 256 characters: longer is not a tracestate to pass on. */
const MAX_TRACESTATE_CHARS = 32 * 257

/**
 * The caller's trace, or undefined when `traceparent` is absent or invalid (version ff, a version 00
 * header with anything after its flags, all-zero ids, uppercase hex): an invalid one is ignored, as
 * the spec says, and never passed on.
 */
export function parseTraceparent(traceparent: string | null, tracestate: string | null): TraceContext | undefined {
  if (traceparent === null || traceparent.length < 55) return undefined
  const match = TRACEPARENT.exec(traceparent.trim())
  if (match === null) return undefined
  const [, version, traceId, spanId, flags, rest] = match as unknown as [string, string, string, string, string, string | undefined]
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined
  const bits = Number.parseInt(flags, 16)
  // The two flags the spec defines; any other bit is reserved, and the spec has vendors write it as zero.
  const context: TraceContext = { traceId, spanId, sampled: (bits & SAMPLED) !== 0 }
  if ((bits & RANDOM) !== 0) context.random = true
  const state = tracestate?.trim()
  if (state && state.length <= MAX_TRACESTATE_CHARS && /^[\x20-\x7e]*$/.test(state)) context.tracestate = state
  return context
}

/** `traceparent` (version 00) for a hop whose parent is `spanId`. */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean, random = false): string {
  return `00-${traceId}-${spanId}-0${(sampled ? SAMPLED : 0) | (random ? RANDOM : 0)}`
}

/** The headers an agent gets for a hop whose parent is `spanId` of `context`'s trace. */
export function traceHeaders(context: TraceContext, spanId = context.spanId): TraceHeaders {
  const headers: TraceHeaders = { traceparent: formatTraceparent(context.traceId, spanId, context.sampled, context.random) }
  if (context.tracestate !== undefined) headers.tracestate = context.tracestate
  return headers
}

/** `bytes` random bytes as lowercase hex, never all zero (an all-zero id is invalid). */
export function randomId(bytes: 8 | 16, random: (bytes: Uint8Array) => void = (buffer) => crypto.getRandomValues(buffer)): string {
  const buffer = new Uint8Array(bytes)
  do random(buffer)
  while (buffer.every((byte) => byte === 0))
  return Buffer.from(buffer).toString('hex')
}
