import type { Clock } from '../../clock.ts'
import { otlpTraceRequest, type Resource, type SpanRecord } from './span.ts'

/** Where and how spans go (`tracing`), read at each batch so a reload applies to the next one. */
export interface ExportSettings {
  /** The collector's OTLP/HTTP traces URL (`…/v1/traces`). */
  endpoint: string
  /** Sent with every export (an API key, a tenant). */
  headers: Record<string, string>
  /** A batch goes out this often at most… */
  flushIntervalMs: number
  /** …or as soon as it holds this many spans. */
  batchSpans: number
  /** Spans waiting beyond this are dropped (and counted): a collector that is down must not grow the server's memory. */
  maxQueuedSpans: number
  /** One export request's bound. */
  timeoutMs: number
  resource: Resource
}

export interface ExportFigures {
  exported: number
  /** Spans given up: the queue was full, or their batch failed (collector down, refused, too slow). */
  dropped: number
  /** Export requests that failed. */
  failedRequests: number
}

/** Sends one batch; resolves with the collector's HTTP status. `fetch` in the server, a stand-in for nothing: tests use a real receiver. */
export type Post = (url: string, init: { headers: Record<string, string>; body: string; signal: AbortSignal }) => Promise<{ status: number }>

const postWithFetch: Post = async (url, init) => {
  const response = await fetch(url, { method: 'POST', ...init })
  // Read to the end, so the keep-alive connection is free for the next batch.
  await response.arrayBuffer()
  return { status: response.status }
}

/**
 * A small OTLP/HTTP JSON exporter: spans wait in a bounded queue and go out in batches from a timer,
 * one request at a time, never on the task path. A failed request drops its batch (counted) and is
 * not retried: spans are worth less than the memory and the requests a retry loop against a down
 * collector would cost, and the next batch tries again on its own.
 */
export class OtlpExporter {
  private queue: SpanRecord[] = []
  private sending: Promise<void> | undefined
  private cancelTimer: (() => void) | undefined
  /** Whether the last export failed: the log says so when a run of failures begins, not at each one. */
  private failing = false
  readonly figures: ExportFigures = { exported: 0, dropped: 0, failedRequests: 0 }

  constructor(
    private readonly settings: () => ExportSettings | undefined,
    private readonly clock: Clock,
    private readonly report: (message: string) => void,
    private readonly post: Post = postWithFetch,
  ) {}

  /** Takes a finished task's spans; never waits, never throws. */
  add(spans: readonly SpanRecord[]): void {
    const settings = this.settings()
    if (settings === undefined) return
    const room = settings.maxQueuedSpans - this.queue.length
    if (room < spans.length) this.figures.dropped += spans.length - Math.max(0, room)
    for (let i = 0; i < Math.min(room, spans.length); i++) this.queue.push(spans[i]!)
    if (this.queue.length >= settings.batchSpans && this.sending === undefined) this.flushSoon(0)
    else this.cancelTimer ??= this.clock.after(settings.flushIntervalMs, () => this.flushNow())
  }

  /** Sends everything queued now (the server's stop calls it): resolves once it is sent or dropped. */
  async flush(): Promise<void> {
    while (this.sending !== undefined || this.queue.length > 0) {
      if (this.sending === undefined) this.flushNow()
      await this.sending
    }
  }

  close(): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
  }

  private flushSoon(ms: number): void {
    this.cancelTimer?.()
    this.cancelTimer = this.clock.after(ms, () => this.flushNow())
  }

  private flushNow(): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
    if (this.sending !== undefined || this.queue.length === 0) return
    const settings = this.settings()
    if (settings === undefined) {
      this.queue = []
      return
    }
    const batch = this.queue.length <= settings.batchSpans ? this.queue : this.queue.slice(0, settings.batchSpans)
    this.queue = batch === this.queue ? [] : this.queue.slice(settings.batchSpans)
    this.sending = this.send(batch, settings).finally(() => {
      this.sending = undefined
      // What came in meanwhile goes out on the next tick of the interval, or at once if a batch is full.
      if (this.queue.length >= settings.batchSpans) this.flushSoon(0)
      else if (this.queue.length > 0) this.flushSoon(settings.flushIntervalMs)
    })
  }

  private async send(batch: SpanRecord[], settings: ExportSettings): Promise<void> {
    let failure: string | undefined
    try {
      const { status } = await this.post(settings.endpoint, {
        headers: { ...settings.headers, 'content-type': 'application/json' },
        body: otlpTraceRequest(batch, settings.resource, settings.resource.serviceVersion),
        signal: AbortSignal.timeout(settings.timeoutMs),
      })
      if (status >= 200 && status < 300) {
        this.figures.exported += batch.length
        this.failing = false
      } else failure = `the collector answered ${status}`
    } catch (error) {
      failure = (error as Error).message
    }
    if (failure === undefined) return
    // Said once per run of failures, not per batch: a collector down for an hour must not flood the log.
    if (!this.failing) this.report(`[mls] tracing: ${batch.length} spans dropped, cannot export to ${settings.endpoint}: ${failure}`)
    this.failing = true
    this.figures.failedRequests++
    this.figures.dropped += batch.length
  }
}
