/**
 * Finished spans, and their OTLP/HTTP JSON encoding (opentelemetry-proto's ExportTraceServiceRequest
 * as JSON: ids as hex, times as decimal strings, enums as numbers). Pure: the exporter calls it off
 * the task path, when a batch goes out.
 */

export type SpanName = 'moonlight.task' | 'moonlight.attempt' | 'moonlight.queue' | 'moonlight.broadcast'

/** OTLP's SpanKind numbers: the task is served (SERVER), an attempt calls an agent (CLIENT), the queue is Moonlight's own (INTERNAL). */
export const SPAN_KIND = { internal: 1, server: 2, client: 3 } as const

export interface SpanRecord {
  name: SpanName
  kind: keyof typeof SPAN_KIND
  traceId: string
  spanId: string
  parentSpanId?: string
  /** Wall ms (epoch) and monotonic ms read together when the task began: every time below is placed against them. */
  anchorWallMs: number
  anchorMonotonicMs: number
  /** Monotonic ms: durations are measured, not stepped by NTP. */
  startMonotonicMs: number
  endMonotonicMs: number
  attributes: Record<string, string | number>
  /** Whether it failed (OTLP status ERROR); unset otherwise, as the spec asks of instrumentation that saw no error. */
  failed?: string
}

/** What the resource (the exporting service) says of itself. */
export interface Resource {
  serviceName: string
  serviceVersion: string
  instanceId?: string
}

type OtlpValue = { stringValue: string } | { intValue: string } | { doubleValue: number }

function value(raw: string | number): OtlpValue {
  if (typeof raw === 'string') return { stringValue: raw }
  return Number.isInteger(raw) ? { intValue: String(raw) } : { doubleValue: raw }
}

function attributes(record: Record<string, string | number>): Array<{ key: string; value: OtlpValue }> {
  return Object.entries(record).map(([key, raw]) => ({ key, value: value(raw) }))
}

/** Unix ns as a decimal string: whole µs of the anchor (a double holds them exactly) plus the monotonic offset in ns. */
export function unixNanos(anchorWallMs: number, anchorMonotonicMs: number, monotonicMs: number): string {
  const anchorMicros = BigInt(Math.round(anchorWallMs * 1000))
  return String(anchorMicros * 1000n + BigInt(Math.round((monotonicMs - anchorMonotonicMs) * 1e6)))
}

/** One export request's body for `spans`. */
export function otlpTraceRequest(spans: readonly SpanRecord[], resource: Resource, scopeVersion: string): string {
  const resourceAttributes: Record<string, string> = { 'service.name': resource.serviceName, 'service.version': resource.serviceVersion }
  if (resource.instanceId !== undefined) resourceAttributes['service.instance.id'] = resource.instanceId
  return JSON.stringify({
    resourceSpans: [
      {
        resource: { attributes: attributes(resourceAttributes) },
        scopeSpans: [
          {
            scope: { name: 'moonlight', version: scopeVersion },
            spans: spans.map((span) => ({
              traceId: span.traceId,
              spanId: span.spanId,
              ...(span.parentSpanId === undefined ? {} : { parentSpanId: span.parentSpanId }),
              name: span.name,
              kind: SPAN_KIND[span.kind],
              startTimeUnixNano: unixNanos(span.anchorWallMs, span.anchorMonotonicMs, span.startMonotonicMs),
              endTimeUnixNano: unixNanos(span.anchorWallMs, span.anchorMonotonicMs, span.endMonotonicMs),
              attributes: attributes(span.attributes),
              // STATUS_CODE_ERROR is 2; an unset status is left out.
              ...(span.failed === undefined ? {} : { status: { code: 2, message: span.failed } }),
            })),
          },
        ],
      },
    ],
  })
}
