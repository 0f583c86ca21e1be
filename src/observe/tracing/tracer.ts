import type { Clock } from '../../clock.ts'
import type { TaskRecord } from '../task-stats.ts'
import type { SpanRecord } from './span.ts'
import { parseTraceparent, randomId, type StoredTrace, type TraceContext, type TraceHeaders, traceHeaders } from './trace-context.ts'

/** What the tracer reads from the settings in force (`tracing`), so a reload applies to the next task. */
export interface TracingSettings {
  /** 0..1: the share of traces Moonlight starts itself that it records; a caller's own trace follows the caller's sampled flag. */
  sample_ratio: number
}

/** One attempt's part of the trace: the headers its agent gets, and its end. */
export interface AttemptTrace {
  readonly headers: TraceHeaders
  /** The attempt ended: with the agent's status, or how it failed. */
  end(status: number | undefined, failure: string | undefined): void
}

/**
 * One task's trace, from the request to its last attempt. Either passed through (the caller's
 * `traceparent` as it came, tracing off or the trace not sampled) or recorded: a span for the task,
 * one per attempt and one for a wait in the slot queue, handed to the exporter when the task ends.
 */
export interface TaskTrace {
  readonly traceId: string
  /** What a stored task keeps of it, for its run (Tracer.resume). */
  stored(): StoredTrace
  attempt(nodeId: string, protocol: string): AttemptTrace
  /** A broadcast's one send to its `clients`: one span for them all, the parent every agent gets (a publish carries one frame). */
  broadcast(clients: number): AttemptTrace
  /** The task begins to wait for a slot; the function returned says it stopped waiting. */
  queued(): () => void
  /** The task ended: its record names the trace (the views and the access log show it), and a recorded trace sends its spans. */
  finished(record: TaskRecord): void
}

const NOTHING = (): void => {}

function storedTrace(context: TraceContext, parentSpanId: string | undefined): StoredTrace {
  const stored: StoredTrace = { trace_id: context.traceId, sampled: context.sampled }
  if (context.random) stored.random = true
  if (parentSpanId !== undefined) stored.parent_span_id = parentSpanId
  if (context.tracestate !== undefined) stored.tracestate = context.tracestate
  return stored
}

/** The caller's context as it came (or one Moonlight made and does not record): every attempt carries the same headers. */
class PassedTrace implements TaskTrace, AttemptTrace {
  readonly traceId: string
  readonly headers: TraceHeaders
  constructor(private readonly context: TraceContext) {
    this.traceId = context.traceId
    this.headers = traceHeaders(context)
  }
  stored(): StoredTrace {
    return storedTrace(this.context, this.context.spanId)
  }
  attempt(): AttemptTrace {
    return this
  }
  broadcast(): AttemptTrace {
    return this
  }
  end(): void {}
  queued(): () => void {
    return NOTHING
  }
  finished(record: TaskRecord): void {
    record.trace_id = this.traceId
  }
}

/** A trace Moonlight records: its task span is the parent of each attempt's span, which is the agent's parent. */
class RecordedTrace implements TaskTrace {
  readonly traceId: string
  private readonly spanId = randomId(8)
  private readonly anchorWallMs: number
  private readonly anchorMonotonicMs: number
  private readonly spans: SpanRecord[] = []

  constructor(
    private readonly context: TraceContext,
    /** The caller's span, the task span's parent; none when Moonlight started the trace. */
    private readonly parentSpanId: string | undefined,
    private readonly clock: Clock,
    private readonly onSpans: (spans: SpanRecord[]) => void,
  ) {
    this.traceId = context.traceId
    this.anchorWallMs = clock.now()
    this.anchorMonotonicMs = clock.monotonic()
  }

  stored(): StoredTrace {
    return storedTrace(this.context, this.parentSpanId)
  }

  attempt(nodeId: string, protocol: string): AttemptTrace {
    return this.child(this.span('moonlight.attempt', 'client', { 'moonlight.node_id': nodeId, 'moonlight.protocol': protocol }))
  }

  broadcast(clients: number): AttemptTrace {
    return this.child(this.span('moonlight.broadcast', 'client', { 'moonlight.clients': clients }))
  }

  /** A span under the task's whose id the agents get as their parent. */
  private child(span: SpanRecord): AttemptTrace {
    span.parentSpanId = this.spanId
    this.spans.push(span)
    const { clock } = this
    return {
      headers: traceHeaders(this.context, span.spanId),
      end: (status, failure) => {
        span.endMonotonicMs = clock.monotonic()
        if (status !== undefined) span.attributes['http.response.status_code'] = status
        if (failure !== undefined) span.failed = failure
      },
    }
  }

  queued(): () => void {
    const span = this.span('moonlight.queue', 'internal', {})
    span.parentSpanId = this.spanId
    this.spans.push(span)
    return () => {
      span.endMonotonicMs = this.clock.monotonic()
    }
  }

  finished(record: TaskRecord): void {
    record.trace_id = this.traceId
    const task = this.span('moonlight.task', 'server', {
      'moonlight.task_id': record.task_id,
      'moonlight.region': record.region,
      'moonlight.mode': record.mode,
      'moonlight.outcome': record.outcome,
      'moonlight.attempts': record.attempts,
      'http.response.status_code': record.status,
    })
    task.spanId = this.spanId
    task.startMonotonicMs = this.anchorMonotonicMs
    if (this.parentSpanId !== undefined) task.parentSpanId = this.parentSpanId
    if (record.node_id !== null) task.attributes['moonlight.node_id'] = record.node_id
    if (record.answered !== undefined) task.attributes['moonlight.answered'] = record.answered
    if (record.outcome !== 'ok') task.failed = record.outcome
    // The task span first: a collector that reads them in order meets the parent before its children.
    this.onSpans([task, ...this.spans])
  }

  private span(name: SpanRecord['name'], kind: SpanRecord['kind'], attributes: SpanRecord['attributes']): SpanRecord {
    const now = this.clock.monotonic()
    const span: SpanRecord = {
      name,
      kind,
      traceId: this.traceId,
      spanId: randomId(8),
      anchorWallMs: this.anchorWallMs,
      anchorMonotonicMs: this.anchorMonotonicMs,
      startMonotonicMs: now,
      // Until it ends: a span cut short (the server stopping) still ends no earlier than it began.
      endMonotonicMs: now,
      attributes,
    }
    return span
  }
}

/**
 * Starts each task's trace from the caller's headers. Tracing off (no `tracing` settings): a valid
 * caller `traceparent` is passed on unchanged, else nothing (one header read per task). Tracing on:
 * a sampled caller trace, or a new trace sampled at `sampleRatio`, is recorded; an unsampled one is
 * passed on (a new one too, so agents still log one trace id).
 */
export class Tracer {
  constructor(
    private readonly settings: () => TracingSettings | undefined,
    private readonly clock: Clock,
    private readonly onSpans: (spans: SpanRecord[]) => void,
    private readonly random: () => number = Math.random,
  ) {}

  /** A request's trace, from its `traceparent` and `tracestate` headers. */
  fromHeaders(headers: Headers): TaskTrace | undefined {
    const traceparent = headers.get('traceparent')
    // The common case, tracing off and no header: one lookup, nothing made.
    if (traceparent === null && this.settings() === undefined) return undefined
    return this.begin(traceparent === null ? undefined : parseTraceparent(traceparent, headers.get('tracestate')))
  }

  /** A stored task's trace, continued as it runs: under the caller's span, or a new root in the same trace. */
  resume(stored: StoredTrace | undefined): TaskTrace | undefined {
    if (stored === undefined) return undefined
    const context: TraceContext = { traceId: stored.trace_id, spanId: stored.parent_span_id ?? randomId(8), sampled: stored.sampled }
    if (stored.random) context.random = true
    if (stored.tracestate !== undefined) context.tracestate = stored.tracestate
    if (stored.parent_span_id !== undefined) return this.begin(context)
    // Moonlight started this trace when the task was submitted: its run is recorded as the root if it was sampled then.
    return this.settings() !== undefined && stored.sampled ? new RecordedTrace(context, undefined, this.clock, this.onSpans) : new PassedTrace(context)
  }

  begin(caller: TraceContext | undefined): TaskTrace | undefined {
    const settings = this.settings()
    if (settings === undefined) return caller === undefined ? undefined : new PassedTrace(caller)
    if (caller !== undefined) return caller.sampled ? new RecordedTrace(caller, caller.spanId, this.clock, this.onSpans) : new PassedTrace(caller)
    const sampled = this.random() < settings.sample_ratio
    const started: TraceContext = { traceId: randomId(16), spanId: randomId(8), sampled }
    return sampled ? new RecordedTrace(started, undefined, this.clock, this.onSpans) : new PassedTrace(started)
  }
}
