import { describe, expect, test } from 'bun:test'
import { accessFields, accessLine } from '../../../src/observe/event-lines.ts'
import { unixNanos } from '../../../src/observe/tracing/span.ts'
import { formatTraceparent, parseTraceparent } from '../../../src/observe/tracing/trace-context.ts'
import { Tracer } from '../../../src/observe/tracing/tracer.ts'
import { FakeClock } from '../../support/fake-clock.ts'

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const SPAN = '00f067aa0ba902b7'

describe('W3C traceparent', () => {
  test('reads version 00, its sampled flag and the tracestate', () => {
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-01`, 'a=1,b=2')).toEqual({ traceId: TRACE, spanId: SPAN, sampled: true, tracestate: 'a=1,b=2' })
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-00`, null)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: false })
  })

  test('a later version is read by its first four fields; version ff, 00 with more fields, zero ids, uppercase or short are ignored', () => {
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-01-what-comes-next`, null)?.traceId).toBe(TRACE)
    for (const invalid of [
      `ff-${TRACE}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-01-extra`,
      `00-${'0'.repeat(32)}-${SPAN}-01`,
      `00-${TRACE}-${'0'.repeat(16)}-01`,
      `00-${TRACE.toUpperCase()}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}`,
      '',
    ])
      expect(parseTraceparent(invalid, null)).toBeUndefined()
    expect(parseTraceparent(null, 'a=1')).toBeUndefined()
  })

  test('a tracestate with control characters is not passed on', () => {
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-01`, 'a=1\r\nx: y')?.tracestate).toBeUndefined()
  })

  test('writes version 00 with the sampled flag', () => {
    expect(formatTraceparent(TRACE, SPAN, true)).toBe(`00-${TRACE}-${SPAN}-01`)
    expect(formatTraceparent(TRACE, SPAN, false)).toBe(`00-${TRACE}-${SPAN}-00`)
  })

  test("the caller's random-trace-id flag (Level 2) is passed on with the sampled one, also through a stored task; reserved bits are cleared", () => {
    const tracer = (on: boolean) =>
      new Tracer(
        () => (on ? { sample_ratio: 1 } : undefined),
        new FakeClock(),
        () => undefined,
      )
    const cases: Array<[string, string]> = [
      ['03', '03'],
      ['02', '02'],
      ['01', '01'],
      ['00', '00'],
      ['ff', '03'],
      ['04', '00'],
    ]
    for (const on of [false, true])
      for (const [sent, passed] of cases) {
        const trace = tracer(on).begin(parseTraceparent(`00-${TRACE}-${SPAN}-${sent}`, null))!
        const flags = (headers: { traceparent: string }) => headers.traceparent.slice(-2)
        const resumed = tracer(on).resume(trace.stored())!
        expect({ on, sent, now: flags(trace.attempt('a', 'http').headers), later: flags(resumed.attempt('a', 'http').headers) }).toEqual({
          on,
          sent,
          now: passed,
          later: passed,
        })
      }
  })
})

describe('span times', () => {
  test('monotonic offsets from a wall-clock anchor, in ns, exact past 2^53', () => {
    expect(unixNanos(1_767_225_600_000, 500, 500)).toBe('1767225600000000000')
    expect(unixNanos(1_767_225_600_000.25, 500, 501.5)).toBe('1767225600001750000')
  })
})

describe('the access log', () => {
  const record = {
    task_id: 't1',
    region: 'eu',
    mode: 'single' as const,
    node_id: 'n1',
    status: 200,
    outcome: 'ok' as const,
    attempts: 1,
    latency_ms: 3,
    finishedAtMs: 0,
  }
  test('carries trace_id when the task has a trace, and says nothing of one otherwise', () => {
    expect(accessFields({ ...record, trace_id: TRACE }).trace_id).toBe(TRACE)
    expect(accessLine({ ...record, trace_id: TRACE })).toEndWith(`, trace ${TRACE}`)
    expect('trace_id' in accessFields(record)).toBe(false)
  })
})
