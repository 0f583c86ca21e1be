/**
 * A local OTLP/HTTP trace receiver for tests: a real Bun server on 127.0.0.1 that takes JSON export
 * requests and keeps each span, decoded, with its resource's attributes.
 */

export interface ReceivedSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  startTimeUnixNano: string
  endTimeUnixNano: string
  attributes: Record<string, string | number>
  status?: { code: number; message?: string }
  resource: Record<string, string | number>
}

export interface OtlpReceiver {
  url: string
  spans: ReceivedSpan[]
  /** Headers of every export request, in order. */
  requests: Array<{ contentType: string | null; headers: Headers }>
  stop: () => void
}

type Attribute = { key: string; value: { stringValue?: string; intValue?: string; doubleValue?: number } }

function decodeAttributes(attributes: Attribute[] = []): Record<string, string | number> {
  const decoded: Record<string, string | number> = {}
  for (const { key, value } of attributes) decoded[key] = value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : value.doubleValue!)
  return decoded
}

export function startOtlpReceiver(): OtlpReceiver {
  const spans: ReceivedSpan[] = []
  const requests: OtlpReceiver['requests'] = []
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    async fetch(request) {
      if (new URL(request.url).pathname !== '/v1/traces' || request.method !== 'POST') return new Response('not found', { status: 404 })
      requests.push({ contentType: request.headers.get('content-type'), headers: request.headers })
      const body = (await request.json()) as { resourceSpans: any[] }
      for (const resourceSpans of body.resourceSpans) {
        const resource = decodeAttributes(resourceSpans.resource?.attributes)
        for (const scopeSpans of resourceSpans.scopeSpans)
          for (const span of scopeSpans.spans) spans.push({ ...span, attributes: decodeAttributes(span.attributes), resource })
      }
      return Response.json({})
    },
  })
  return { url: `http://127.0.0.1:${server.port}/v1/traces`, spans, requests, stop: () => server.stop(true) }
}
