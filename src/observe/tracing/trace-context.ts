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
  /** The caller's `tracestate`, checked and normalized (parseTracestate); Moonlight adds no entry of its own. */
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
/** A tracestate list member (Trace Context §3.3.1.3): a key, simple or `tenant@system`, `=`, a value of printable ASCII but `,` and `=`, not ending in a space. */
const TRACESTATE_MEMBER =
  /^(?:[a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/
/** The spec's most list members. */
const MAX_TRACESTATE_MEMBERS = 32
/** What Moonlight passes on at most, the size the spec asks every vendor to propagate (§3.3.1.5): an agent's header stays small. */
const MAX_TRACESTATE_CHARS = 512
/** Over MAX_TRACESTATE_CHARS, the members longer than this go first, as the spec says. */
const LONG_TRACESTATE_MEMBER = 128

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
  const state = tracestate === null ? undefined : parseTracestate(tracestate)
  if (state !== undefined) context.tracestate = state
  return context
}

/**
 * The caller's `tracestate` as it goes on: its members without the white space around them, or
 * undefined when there is none or the list is invalid (a malformed member, a key twice, more than
 * 32 members), which the spec has vendors drop whole. Over 512 characters whole members are cut,
 * those over 128 characters first, then from the end (§3.3.1.5).
 */
export function parseTracestate(tracestate: string): string | undefined {
  const members: string[] = []
  const keys = new Set<string>()
  for (const raw of tracestate.split(',')) {
    const member = raw.replace(/^[ \t]+|[ \t]+$/g, '')
    // Empty members are allowed, and mean nothing.
    if (member === '') continue
    if (members.length === MAX_TRACESTATE_MEMBERS || !TRACESTATE_MEMBER.test(member)) return undefined
    const key = member.slice(0, member.indexOf('='))
    if (keys.has(key)) return undefined
    keys.add(key)
    members.push(member)
  }
  let kept = members
  const length = () => kept.reduce((sum, member) => sum + member.length, kept.length - 1)
  if (length() > MAX_TRACESTATE_CHARS) kept = kept.filter((member) => member.length <= LONG_TRACESTATE_MEMBER)
  while (length() > MAX_TRACESTATE_CHARS) kept.pop()
  return kept.length === 0 ? undefined : kept.join(',')
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
