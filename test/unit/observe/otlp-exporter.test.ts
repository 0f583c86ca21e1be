import { describe, expect, test } from 'bun:test'
import { describeEndpoint, type ExportSettings, OtlpExporter, type PostAnswer, retryAfterMs } from '../../../src/observe/tracing/otlp-exporter.ts'
import type { SpanRecord } from '../../../src/observe/tracing/span.ts'
import { FakeClock } from '../../support/fake-clock.ts'

const SETTINGS: ExportSettings = {
  endpoint: 'http://127.0.0.1:4318/v1/traces',
  headers: {},
  flushIntervalMs: 1000,
  batchSpans: 2,
  maxQueuedSpans: 4,
  timeoutMs: 10_000,
  resource: { serviceName: 'moonlight', serviceVersion: '0' },
}

function span(): SpanRecord {
  return {
    name: 'moonlight.task',
    kind: 'server',
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: '00f067aa0ba902b7',
    anchorWallMs: 0,
    anchorMonotonicMs: 0,
    startMonotonicMs: 0,
    endMonotonicMs: 0,
    attributes: {},
  }
}

/** An exporter whose collector answers each request with the next of `answers` (the last one for ever). */
function exporter(answers: PostAnswer[]) {
  const clock = new FakeClock()
  const warnings: string[] = []
  const posts: string[] = []
  const answered = (index: number) => answers[Math.min(index, answers.length - 1)]!
  const otlp = new OtlpExporter(
    () => SETTINGS,
    clock,
    (message) => warnings.push(message),
    async (url) => answered(posts.push(url) - 1),
  )
  /** Lets the answer in flight settle. */
  const settle = () => new Promise((resolve) => setImmediate(resolve))
  return { clock, otlp, warnings, posts, settle }
}

describe('Retry-After', () => {
  test('delay-seconds or an HTTP date, at most a minute; anything else is none', () => {
    const nowMs = Date.UTC(2026, 0, 1)
    expect(retryAfterMs('30', nowMs)).toBe(30_000)
    expect(retryAfterMs(' 0 ', nowMs)).toBe(0)
    expect(retryAfterMs('3600', nowMs)).toBe(60_000)
    expect(retryAfterMs(new Date(nowMs + 10_000).toUTCString(), nowMs)).toBe(10_000)
    expect(retryAfterMs(new Date(nowMs - 10_000).toUTCString(), nowMs)).toBe(0)
    for (const none of [null, 'soon', '-5', '1.5', ''].map((value) => retryAfterMs(value, nowMs))) expect(none).toBeUndefined()
  })

  test('a 429 with Retry-After holds every batch until then; spans past the queue are dropped; then export resumes', async () => {
    const { clock, otlp, posts, settle } = exporter([{ status: 429, retryAfterMs: 5000 }, { status: 200 }])
    otlp.add([span(), span()])
    clock.advance(0)
    await settle()
    expect([posts.length, otlp.figures]).toEqual([1, { exported: 0, dropped: 2, failedRequests: 1 }])
    otlp.add([span(), span()])
    otlp.add([span(), span(), span()])
    clock.advance(4999)
    await settle()
    expect([posts.length, otlp.figures.dropped]).toEqual([1, 3])
    clock.advance(1)
    await settle()
    clock.advance(0)
    await settle()
    expect([posts.length, otlp.figures]).toEqual([3, { exported: 4, dropped: 3, failedRequests: 1 }])
  })

  test('a stop while the collector asked to wait sends nothing: what is queued is dropped', async () => {
    const { clock, otlp, posts, settle } = exporter([{ status: 503, retryAfterMs: 60_000 }])
    otlp.add([span(), span()])
    clock.advance(0)
    await settle()
    otlp.add([span()])
    await otlp.flush()
    expect([posts.length, otlp.figures]).toEqual([1, { exported: 0, dropped: 3, failedRequests: 1 }])
  })
})

describe('the warning log', () => {
  test('a collector failing every other batch gets one warning a minute, not one per failure', async () => {
    const { clock, otlp, warnings, settle } = exporter([{ status: 500 }, { status: 200 }, { status: 500 }, { status: 200 }, { status: 500 }])
    for (let i = 0; i < 4; i++) {
      otlp.add([span(), span()])
      clock.advance(0)
      await settle()
    }
    expect(warnings).toHaveLength(1)
    clock.advance(60_000)
    otlp.add([span(), span()])
    clock.advance(0)
    await settle()
    expect(otlp.figures.failedRequests).toBe(3)
    expect(warnings).toHaveLength(2)
  })

  test('names the collector by scheme, host and path only', () => {
    expect(describeEndpoint('https://user:secret@otel.example:4318/v1/traces?api_key=k#x')).toBe('https://otel.example:4318/v1/traces')
  })
})

/** Real timers wait 1 ms at least: a timer asked for 0 ms runs on a later turn, never at once. */
class MillisecondClock extends FakeClock {
  override after(ms: number, job: () => void): () => void {
    return super.after(Math.max(1, ms), job)
  }
}

describe('batches', () => {
  test('spans arriving faster than a timer runs do not put a full batch off: it goes out, and the queue does not overflow for ever', async () => {
    const clock = new MillisecondClock()
    const posts: number[] = []
    const otlp = new OtlpExporter(
      () => SETTINGS,
      clock,
      () => undefined,
      async () => {
        posts.push(clock.monotonic())
        return { status: 200 }
      },
    )
    // A task finishes every half millisecond.
    for (let i = 0; i < 20; i++) {
      otlp.add([span()])
      clock.advance(0.5)
      await new Promise((resolve) => setImmediate(resolve))
    }
    expect(posts.length).toBeGreaterThanOrEqual(4)
    expect(otlp.figures.exported).toBeGreaterThanOrEqual(8)
  })
})

describe('close', () => {
  test('after close nothing is sent: queued and later spans are dropped and counted', async () => {
    const { clock, otlp, posts } = exporter([{ status: 200 }])
    otlp.add([span()])
    otlp.close()
    otlp.add([span()])
    clock.advance(10_000)
    await otlp.flush()
    expect([posts.length, otlp.figures.dropped]).toEqual([0, 2])
  })
})
