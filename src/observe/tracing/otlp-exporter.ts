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

/** A collector's answer to one batch: its HTTP status, and how long it asked to be left alone (429 or 503 with Retry-After). */
export interface PostAnswer {
  status: number
  retryAfterMs?: number
}

/** Sends one batch. `fetch` in the server; the tests of the policy around it pass their own. */
export type Post = (url: string, init: { headers: Record<string, string>; body: string; signal: AbortSignal }) => Promise<PostAnswer>

/** The most of a collector's answer read: it is a small status message, and one without end must not fill the memory. */
const MAX_ANSWER_BYTES = 64 * 1024
/** The longest pause a Retry-After gets: a collector's wish, not a reason to stop tracing for hours. */
const MAX_RETRY_AFTER_MS = 60_000
/** A collector that fails now and then gets one warning in this long, not one per failure. */
const WARNING_INTERVAL_MS = 60_000

/** Retry-After's delay-seconds or HTTP-date, as ms from `nowMs`; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, nowMs: number): number | undefined {
  if (header === null) return undefined
  const value = header.trim()
  // An HTTP date has a weekday and a month in letters; a number that is not whole seconds is neither form.
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : /[a-z]/i.test(value) ? Date.parse(value) - nowMs : Number.NaN
  return Number.isFinite(ms) ? Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms)) : undefined
}

/** The body read to its end (the keep-alive connection is then free for the next batch), or cut past MAX_ANSWER_BYTES. */
async function readBounded(body: ReadableStream<Uint8Array> | null): Promise<void> {
  if (body === null) return
  const reader = body.getReader()
  let bytes = 0
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    bytes += chunk.value.byteLength
    if (bytes > MAX_ANSWER_BYTES) {
      await reader.cancel()
      return
    }
  }
}

export const postWithFetch: Post = async (url, init) => {
  // A redirect is not followed: the spans and tracing.headers (an API key) go to the collector configured, or nowhere.
  const response = await fetch(url, { method: 'POST', redirect: 'manual', ...init })
  await readBounded(response.body)
  const answer: PostAnswer = { status: response.status }
  if (response.status === 429 || response.status === 503) {
    const ms = retryAfterMs(response.headers.get('retry-after'), Date.now())
    if (ms !== undefined) answer.retryAfterMs = ms
  }
  return answer
}

/** The endpoint as the log names it: no user name, password or query (an API key may be in any of them). */
export function describeEndpoint(endpoint: string): string {
  const url = URL.parse(endpoint)
  return url === null ? 'the collector' : `${url.protocol}//${url.host}${url.pathname}`
}

export class OtlpExporter {
  private queue: SpanRecord[] = []
  private sending: Promise<void> | undefined
  private cancelTimer: (() => void) | undefined
  /** Monotonic ms the armed timer runs at. */
  private timerDueMs = 0
  /** Whether the last export failed: the log says so when a run of failures begins, not at each one. */
  private failing = false
  /** The last warning: another for the same endpoint waits WARNING_INTERVAL_MS; one for a new endpoint (a reload) is said at once. */
  private warned: { endpoint: string; atMs: number } | undefined
  /** Monotonic ms before which the collector asked not to be sent to (Retry-After). */
  private pausedUntilMs = 0
  /** Set by close(): it cuts the request in flight, and nothing is sent any more. */
  private readonly closing = new AbortController()
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
    if (this.closing.signal.aborted) {
      this.figures.dropped += spans.length
      return
    }
    const room = settings.maxQueuedSpans - this.queue.length
    if (room < spans.length) this.figures.dropped += spans.length - Math.max(0, room)
    for (let i = 0; i < Math.min(room, spans.length); i++) this.queue.push(spans[i]!)
    if (this.queue.length >= settings.batchSpans && this.sending === undefined && !this.paused()) this.flushSoon(0)
    else this.flushSoon(settings.flushIntervalMs)
  }

  /**
   * Sends everything queued now (the server's stop calls it): resolves once it is sent or dropped.
   * A collector that asked to be left alone, or an exporter closed, gets nothing: the spans are dropped.
   */
  async flush(): Promise<void> {
    for (;;) {
      if (this.sending !== undefined) await this.sending
      else if (this.queue.length === 0) return
      else if (this.paused() || this.closing.signal.aborted || this.settings() === undefined) {
        this.dropQueued()
        return
      } else this.flushNow()
    }
  }

  /** Nothing is sent any more: the request in flight is cut, what is queued dropped (counted). */
  close(): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
    this.closing.abort()
    this.dropQueued()
  }

  private paused(): boolean {
    return this.clock.monotonic() < this.pausedUntilMs
  }

  private dropQueued(): void {
    this.figures.dropped += this.queue.length
    this.queue = []
  }

  /** Arms the timer to flush in `ms`, unless it is armed to run sooner: spans coming in faster than a timer runs must not put a batch off for ever. */
  private flushSoon(ms: number): void {
    const dueMs = this.clock.monotonic() + ms
    if (this.cancelTimer !== undefined && this.timerDueMs <= dueMs) return
    this.cancelTimer?.()
    this.timerDueMs = dueMs
    this.cancelTimer = this.clock.after(ms, () => this.flushNow())
  }

  private flushNow(): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
    if (this.sending !== undefined || this.queue.length === 0 || this.closing.signal.aborted) return
    const settings = this.settings()
    // Tracing was turned off (a reload): what waited is given up, and counted.
    if (settings === undefined) {
      this.dropQueued()
      return
    }
    if (this.paused()) {
      this.flushSoon(this.pausedUntilMs - this.clock.monotonic())
      return
    }
    const batch = this.queue.length <= settings.batchSpans ? this.queue : this.queue.slice(0, settings.batchSpans)
    this.queue = batch === this.queue ? [] : this.queue.slice(settings.batchSpans)
    this.sending = this.send(batch, settings).finally(() => {
      this.sending = undefined
      if (this.closing.signal.aborted || this.queue.length === 0) return
      // What came in meanwhile goes out on the next tick of the interval, or at once if a batch is full,
      // with the settings in force now (a reload may have changed them, or turned tracing off).
      const now = this.settings()
      if (now === undefined) this.dropQueued()
      else if (this.paused()) this.flushSoon(this.pausedUntilMs - this.clock.monotonic())
      else this.flushSoon(this.queue.length >= now.batchSpans ? 0 : now.flushIntervalMs)
    })
  }

  private async send(batch: SpanRecord[], settings: ExportSettings): Promise<void> {
    let failure: string | undefined
    try {
      const answer = await this.post(settings.endpoint, {
        headers: { ...settings.headers, 'content-type': 'application/json' },
        body: otlpTraceRequest(batch, settings.resource, settings.resource.serviceVersion),
        signal: AbortSignal.any([AbortSignal.timeout(settings.timeoutMs), this.closing.signal]),
      })
      if (answer.status >= 200 && answer.status < 300) {
        this.figures.exported += batch.length
        this.failing = false
      } else if (answer.retryAfterMs === undefined) failure = `the collector answered ${answer.status}`
      else {
        // Honoured (OTLP/HTTP throttling): the spans meanwhile wait in the queue, and past it are dropped.
        this.pausedUntilMs = this.clock.monotonic() + answer.retryAfterMs
        failure = `the collector answered ${answer.status}, asking for ${Math.ceil(answer.retryAfterMs / 1000)} s without exports`
      }
    } catch (error) {
      failure = (error as Error).message
    }
    if (failure === undefined) return
    this.figures.failedRequests++
    this.figures.dropped += batch.length
    // Cut by close(): the server is stopping, and said so.
    if (this.closing.signal.aborted) return
    this.warn(`${batch.length} spans dropped, cannot export to ${describeEndpoint(settings.endpoint)}: ${failure}`, settings.endpoint)
  }

  /**
   * Said when a run of failures begins, not per batch: a collector down for an hour must not flood
   * the log, nor one that fails every other batch (one line a minute at most); a new endpoint is said at once.
   */
  private warn(message: string, endpoint: string): void {
    const beginning = !this.failing
    this.failing = true
    const nowMs = this.clock.monotonic()
    const newEndpoint = this.warned === undefined || this.warned.endpoint !== endpoint
    if (!newEndpoint && !(beginning && nowMs - this.warned!.atMs >= WARNING_INTERVAL_MS)) return
    this.warned = { endpoint, atMs: nowMs }
    this.report(`[mls] tracing: ${message}`)
  }
}
