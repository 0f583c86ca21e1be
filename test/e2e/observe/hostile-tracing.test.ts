/**
 * Tracing against a hostile caller and a hostile collector: every malformed `traceparent` and
 * `tracestate` shape W3C Trace Context names, as HTTP agents, WebSocket agents, stored tasks and
 * a cluster relay see them; and an OTLP collector on 127.0.0.1 that hangs, refuses, redirects,
 * answers without end or is not there, while tasks go on, a reload changes `tracing` and the
 * server stops.
 */
import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import { startServer } from '../../../src/server/server.ts'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { deadPort, metricSample, SEED_CONFIG, startHttpAgent, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()
const { redisServer, instance, wsAgent, writeConfig, spawn } = clusterScope(defer)

/** `moonlight serve` as its own process, with the seed config and `extra`. */
async function spawnServe(extra: Record<string, unknown>) {
  const child = await spawn(['--config', writeConfig('serve', extra)])
  if (!child.url) throw new Error(`serve did not start:\n${child.output()}`)
  return child
}

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN = '00f067aa0ba902b7'
const CALLER_PARENT = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`
const VALID_TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]$/

/** POST /task/request with `headers` (a list, so a header may come twice). */
async function postTask(url: string, body: unknown, headers: Array<[string, string]> = []) {
  const all = new Headers({ authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' })
  for (const [name, value] of headers) all.append(name, value)
  const response = await fetch(`${url}/task/request`, { method: 'POST', headers: all, body: JSON.stringify(body) })
  const text = await response.text()
  return { status: response.status, headers: response.headers, json: () => JSON.parse(text) }
}

/** An HTTP agent in us-east-1 that keeps each request's trace headers. */
async function tracedHttpAgent(url: string, nodeId = 'h1') {
  const seen: Array<{ traceparent: string | null; tracestate: string | null }> = []
  const agent = await startHttpAgent(url, {
    nodeId,
    region: 'us-east-1',
    work: (payload, request) => {
      seen.push({ traceparent: request.headers.get('traceparent'), tracestate: request.headers.get('tracestate') })
      return Response.json({ echo: payload })
    },
  })
  defer(agent.stop)
  return seen
}

/** A server in this process whose log lines the test reads. */
function loggedServer(overrides: Record<string, unknown>) {
  const lines: string[] = []
  const config = (with_: Record<string, unknown>) => parseConfig({ ...SEED_CONFIG, html: { ...SEED_CONFIG.html, enabled: false }, ...with_ }, 'test')
  const mls = startServer({ loaded: config(overrides), port: 0, host: '127.0.0.1', log: (line) => lines.push(line) })
  let stopped: Promise<void> | undefined
  const stop = () => (stopped ??= mls.stop(0))
  defer(stop)
  /** Reloads the seed config with `next` instead of the first overrides. */
  const reload = (next: Record<string, unknown>) => mls.reload(config(next))
  return { url: mls.url, lines, stop, reload, tracingWarnings: () => lines.filter((line) => line.includes('tracing:')) }
}

interface Received {
  headers: Headers
  body: string
  aborted: boolean
}

/** A collector on 127.0.0.1 that answers the n-th export request (0-based) as `answer` says; it keeps every request. */
function hostileCollector(answer: (n: number, request: Request) => Response | Promise<Response>) {
  const received: Received[] = []
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    idleTimeout: 0,
    async fetch(request) {
      const entry: Received = { headers: request.headers, body: '', aborted: false }
      request.signal.addEventListener('abort', () => {
        entry.aborted = true
      })
      received.push(entry)
      entry.body = await request.text()
      return answer(received.length - 1, request)
    },
  })
  defer(() => server.stop(true))
  return { url: `http://127.0.0.1:${server.port}/v1/traces`, port: server.port, received }
}

const HANG = () => new Promise<Response>(() => {})

/** The figures of /metrics for tracing. */
async function figures(url: string) {
  return {
    exported: await metricSample(url, 'moonlight_trace_spans_exported_total'),
    dropped: await metricSample(url, 'moonlight_trace_spans_dropped_total'),
    failures: await metricSample(url, 'moonlight_trace_export_failures_total'),
  }
}

/** `count` tasks with the caller's sampled trace (two spans each: task and attempt), all answered 200. */
async function tracedTasks(url: string, count: number) {
  for (let i = 0; i < count; i++) expect((await postTask(url, { region: 'us-east-1', payload: i }, [['traceparent', CALLER_PARENT]])).status).toBe(200)
}

/** Tasks, one after another, until `count` export requests have failed. */
async function failuresWhileTasksRun(url: string, count: number) {
  await waitFor(
    async () => {
      await tracedTasks(url, 1)
      return (await figures(url)).failures >= count
    },
    `${count} failed exports`,
    10_000,
  )
}

describe("a hostile caller's traceparent", () => {
  const shapes: Array<[string, Array<[string, string]>]> = [
    ['version ff', [['traceparent', `ff-${CALLER_TRACE}-${CALLER_SPAN}-01`]]],
    ['version 00 with a fifth field', [['traceparent', `${CALLER_PARENT}-extra`]]],
    ['a later version whose flags are not followed by a dash', [['traceparent', `cc-${CALLER_TRACE}-${CALLER_SPAN}-01.what`]]],
    ['upper-case hex', [['traceparent', CALLER_PARENT.toUpperCase()]]],
    ['an upper-case version', [['traceparent', `0A-${CALLER_TRACE}-${CALLER_SPAN}-01`]]],
    ['an all-zero trace id', [['traceparent', `00-${'0'.repeat(32)}-${CALLER_SPAN}-01`]]],
    ['an all-zero parent id', [['traceparent', `00-${CALLER_TRACE}-${'0'.repeat(16)}-01`]]],
    ['a short trace id', [['traceparent', `00-${CALLER_TRACE.slice(1)}-${CALLER_SPAN}-01`]]],
    ['a long parent id', [['traceparent', `00-${CALLER_TRACE}-${CALLER_SPAN}0-01`]]],
    ['one flag digit', [['traceparent', `00-${CALLER_TRACE}-${CALLER_SPAN}-1`]]],
    ['three flag digits', [['traceparent', `${CALLER_PARENT}1`]]],
    ['a non-hex flag', [['traceparent', `00-${CALLER_TRACE}-${CALLER_SPAN}-0.`]]],
    [
      'two traceparent headers',
      [
        ['traceparent', CALLER_PARENT],
        ['traceparent', CALLER_PARENT],
      ],
    ],
    ['non-ASCII', [['traceparent', `00-${CALLER_TRACE}-${CALLER_SPAN}-0\u00e9`]]],
    ['other separators', [['traceparent', `00_${CALLER_TRACE}_${CALLER_SPAN}_01`]]],
  ]

  test('tracing off: every malformed shape is answered 200 and the agent gets no traceparent, nor the tracestate sent with it', async () => {
    const mls = server()
    const seen = await tracedHttpAgent(mls.url)
    for (const [what, headers] of shapes) {
      const answered = await postTask(mls.url, { region: 'us-east-1', payload: what }, [...headers, ['tracestate', 'k=v']])
      expect({ what, status: answered.status }).toEqual({ what, status: 200 })
    }
    expect(seen).toEqual(shapes.map(() => ({ traceparent: null, tracestate: null })))
  })

  test("tracing on: every malformed shape restarts the trace, a valid traceparent of Moonlight's own with a new trace id", async () => {
    const mls = server({ tracing: { endpoint: `http://127.0.0.1:${deadPort()}/v1/traces` } })
    const seen = await tracedHttpAgent(mls.url)
    for (const [what, headers] of shapes) {
      const answered = await postTask(mls.url, { region: 'us-east-1', payload: what }, [...headers, ['tracestate', 'k=v']])
      expect({ what, status: answered.status }).toEqual({ what, status: 200 })
    }
    for (const [index, headers] of seen.entries()) {
      expect({ what: shapes[index]![0], valid: VALID_TRACEPARENT.test(headers.traceparent ?? '') }).toEqual({ what: shapes[index]![0], valid: true })
      expect(headers.traceparent).not.toContain(CALLER_TRACE)
      expect(headers.tracestate).toBeNull()
    }
  })

  test('a later version with more fields goes on as version 00 with its ids and flags, nothing of what follows them', async () => {
    const mls = server()
    const seen = await tracedHttpAgent(mls.url)
    expect(
      (await postTask(mls.url, { region: 'us-east-1', payload: 1 }, [['traceparent', `cc-${CALLER_TRACE}-${CALLER_SPAN}-01-what-comes-next`]])).status,
    ).toBe(200)
    expect(seen).toEqual([{ traceparent: CALLER_PARENT, tracestate: null }])
  })
})

/** 32 members `k01=1`…: the most a tracestate holds. */
const MEMBERS_32 = Array.from({ length: 32 }, (_, index) => `k${String(index + 1).padStart(2, '0')}=1`)
/** Over 512 characters: one member over 128 characters, then eight of 64. */
const LONG_FIRST = `a=${'x'.repeat(100)}`
const OVER_128 = `big=${'y'.repeat(200)}`
const OF_64 = Array.from({ length: 8 }, (_, index) => `k${index + 1}=${'z'.repeat(61)}`)

/** What a caller sends as tracestate (one header per entry), and what an agent must get (null: none). */
const TRACESTATES: Array<[string, string[], string | null]> = [
  ['two members', ['a=1,b=2'], 'a=1,b=2'],
  ['optional white space, tabs included, around members', ['foo=1 \t , \t bar=2,\t baz=3 '], 'foo=1,bar=2,baz=3'],
  ['two tracestate headers, combined in order', ['foo=1,bar=2', 'rojo=1'], 'foo=1,bar=2,rojo=1'],
  ['empty members', ['a=1,,b=2,'], 'a=1,b=2'],
  ['32 members', [MEMBERS_32.join(',')], MEMBERS_32.join(',')],
  ['33 members', [[...MEMBERS_32, 'k33=1'].join(',')], null],
  ['a duplicated key', ['foo=1,foo=2'], null],
  ['a duplicated key across two headers', ['foo=1', 'foo=1'], null],
  ['an upper-case key', ['FOO=1'], null],
  ['a space inside a key', ['foo =1'], null],
  ['a dot in a key', ['foo.bar=1'], null],
  ['a bad tenant key', ['foo@=1,bar=2'], null],
  ['two @ in a key', ['foo@bar@baz=1'], null],
  ['a key over 256 characters', [`${'k'.repeat(257)}=1`], null],
  ['a member without =', ['foo,bar=2'], null],
  ['an empty value', ['foo='], null],
  ['= inside a value', ['foo=a=b'], null],
  ['a value over 256 characters', [`foo=${'v'.repeat(257)}`], null],
  ['non-ASCII', ['foo=\u00e9'], null],
  ['only commas and spaces', [' , ,'], null],
  [
    'over 512 characters: the member over 128 goes first, then members from the end',
    [[LONG_FIRST, OVER_128, ...OF_64].join(',')],
    [LONG_FIRST, ...OF_64.slice(0, 6)].join(','),
  ],
]

describe("a hostile caller's tracestate", () => {
  test('an HTTP agent gets it as W3C Trace Context says: valid members normalized, an invalid list dropped, never more than 512 characters', async () => {
    const mls = server()
    const seen = await tracedHttpAgent(mls.url)
    for (const [what, sent] of TRACESTATES) {
      const answered = await postTask(mls.url, { region: 'us-east-1', payload: what }, [
        ['traceparent', CALLER_PARENT],
        ...sent.map((value): [string, string] => ['tracestate', value]),
      ])
      expect({ what, status: answered.status }).toEqual({ what, status: 200 })
    }
    expect(seen.map((headers, index) => ({ what: TRACESTATES[index]![0], traceparent: headers.traceparent, tracestate: headers.tracestate }))).toEqual(
      TRACESTATES.map(([what, , expected]) => ({ what, traceparent: CALLER_PARENT, tracestate: expected })),
    )
  })

  test('a WebSocket agent gets it the same in the task frame, tracing on', async () => {
    const mls = server({ tracing: { endpoint: `http://127.0.0.1:${deadPort()}/v1/traces` } })
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'w1', region: 'us-east-1' })
    defer(agent.close)
    for (const [what, sent] of TRACESTATES)
      expect(
        (
          await postTask(mls.url, { region: 'us-east-1', payload: what }, [
            ['traceparent', CALLER_PARENT],
            ...sent.map((value): [string, string] => ['tracestate', value]),
          ])
        ).status,
      ).toBe(200)
    const frames = agent.messages.filter((message) => message.type === 'task')
    expect(frames.map((frame) => ({ what: frame.payload, tracestate: frame.tracestate ?? null, trace: frame.traceparent.slice(3, 35) }))).toEqual(
      TRACESTATES.map(([what, , expected]) => ({ what, tracestate: expected, trace: CALLER_TRACE })),
    )
  })

  test('an async task keeps only the checked tracestate, and its agent gets that when the task runs', async () => {
    const mls = server()
    const seen = await tracedHttpAgent(mls.url)
    const sent = ['foo=1 \t , FOO=2']
    const bad = await postTask(mls.url, { region: 'us-east-1', payload: 'bad', mode: 'async' }, [
      ['traceparent', CALLER_PARENT],
      ['tracestate', sent[0]!],
    ])
    const good = await postTask(mls.url, { region: 'us-east-1', payload: 'good', mode: 'async' }, [
      ['traceparent', CALLER_PARENT],
      ['tracestate', 'foo=1 \t , bar=2'],
    ])
    expect([bad.status, good.status]).toEqual([202, 202])
    for (const accepted of [bad, good]) {
      const { task_id } = accepted.json()
      await waitFor(async () => (await getJson(`${mls.url}/task/${task_id}`)).state === 'done', 'the task is done')
    }
    expect(seen).toEqual([
      { traceparent: CALLER_PARENT, tracestate: null },
      { traceparent: CALLER_PARENT, tracestate: 'foo=1,bar=2' },
    ])
  })

  test('relayed through a cluster, the WebSocket agent on the other instance gets the checked tracestate', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    const agent = await wsAgent(b, { nodeId: 'far', region: 'us-east-1' })
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((client: { node_id: string }) => client.node_id === 'far'), 'A lists far')
    const cases: Array<[string, string]> = [
      ['33', [...MEMBERS_32, 'k33=1'].join(',')],
      ['ows', 'foo=1 \t , bar=2'],
      ['long', [LONG_FIRST, OVER_128, ...OF_64].join(',')],
    ]
    for (const [payload, tracestate] of cases) {
      const answered = await postTask(a.url, { region: 'us-east-1', payload }, [
        ['traceparent', CALLER_PARENT],
        ['tracestate', tracestate],
      ])
      expect([answered.status, answered.headers.get('x-moonlight-instance')]).toEqual([200, 'b'])
    }
    const frames = agent.messages.filter((message) => message.type === 'task')
    expect(frames.map((frame) => [frame.payload, frame.traceparent, frame.tracestate ?? null])).toEqual([
      ['33', CALLER_PARENT, null],
      ['ows', CALLER_PARENT, 'foo=1,bar=2'],
      ['long', CALLER_PARENT, [LONG_FIRST, ...OF_64.slice(0, 6)].join(',')],
    ])
  })
})

describe('a hostile collector', () => {
  /** Tracing to `endpoint` in batches of 2 spans (one task), 4 queued at most, sent as soon as they are there. */
  const tight = (endpoint: string, extra: Record<string, unknown> = {}) => ({ endpoint, flush_interval: 0.05, batch_spans: 2, max_queued_spans: 4, ...extra })

  test('one that hangs: tasks are answered, one request at a time, the queue holds max_queued_spans and counts the rest as dropped', async () => {
    const collector = hostileCollector(HANG)
    const mls = loggedServer({ tracing: tight(collector.url, { timeout: 60 }) })
    await tracedHttpAgent(mls.url)
    await tracedTasks(mls.url, 1)
    await waitFor(() => collector.received.length === 1, 'the first batch hangs')
    await tracedTasks(mls.url, 9)
    await waitFor(async () => (await figures(mls.url)).dropped === 14, '14 of the 20 spans dropped: 2 in flight, 4 queued')
    expect(await figures(mls.url)).toEqual({ exported: 0, dropped: 14, failures: 0 })
    expect(collector.received).toHaveLength(1)
    expect(mls.tracingWarnings()).toEqual([])
  })

  test('one that times out, refuses with 400 and a partial-success body, or closes mid-answer: one warning for the run of failures, tasks answered', async () => {
    const listener = Bun.listen({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        data(socket) {
          socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"partial')
          socket.end()
        },
      },
    })
    defer(() => listener.stop(true))
    const refusing = hostileCollector(() => Response.json({ partialSuccess: { rejectedSpans: 2, errorMessage: 'no' } }, { status: 400 }))
    const hanging = hostileCollector(HANG)
    for (const endpoint of [`http://127.0.0.1:${listener.port}/v1/traces`, refusing.url, hanging.url]) {
      const mls = loggedServer({ tracing: tight(endpoint, { timeout: 0.2 }) })
      await tracedHttpAgent(mls.url, `h-${mls.url.slice(-5)}`)
      await failuresWhileTasksRun(mls.url, 3)
      const { exported, failures } = await figures(mls.url)
      expect({ endpoint, exported, failing: failures >= 3, warnings: mls.tracingWarnings().length }).toEqual({
        endpoint,
        exported: 0,
        failing: true,
        warnings: 1,
      })
    }
  })

  test('one that fails every other batch: the log does not get a warning per failure', async () => {
    const collector = hostileCollector((n) => (n % 2 === 0 ? new Response('overloaded', { status: 500 }) : Response.json({})))
    const mls = loggedServer({ tracing: tight(collector.url) })
    await tracedHttpAgent(mls.url)
    await failuresWhileTasksRun(mls.url, 4)
    expect((await figures(mls.url)).failures).toBeGreaterThanOrEqual(4)
    expect(mls.tracingWarnings()).toHaveLength(1)
  })

  test('one that answers 429 with Retry-After is not sent to again before then: the spans wait, and past the queue they are dropped', async () => {
    const collector = hostileCollector(() => new Response('slow down', { status: 429, headers: { 'retry-after': '30' } }))
    const mls = loggedServer({ tracing: tight(collector.url) })
    await tracedHttpAgent(mls.url)
    await tracedTasks(mls.url, 1)
    await waitFor(async () => (await figures(mls.url)).failures === 1, 'the first batch is refused')
    await tracedTasks(mls.url, 5)
    // 2 refused, then 10 more: 4 wait in the queue, 6 dropped.
    await waitFor(async () => (await figures(mls.url)).dropped === 8, 'the queue is full')
    expect(collector.received).toHaveLength(1)
    expect(await figures(mls.url)).toEqual({ exported: 0, dropped: 8, failures: 1 })
  })

  test('one that answers without end: the exporter reads a bounded part of the answer and goes on', async () => {
    let written = 0
    const collector = hostileCollector(
      () =>
        new Response(
          new ReadableStream({
            pull(controller) {
              written += 65_536
              controller.enqueue(new Uint8Array(65_536))
            },
          }),
          { headers: { 'content-type': 'application/json' } },
        ),
    )
    const mls = loggedServer({ tracing: tight(collector.url, { timeout: 30 }) })
    await tracedHttpAgent(mls.url)
    await tracedTasks(mls.url, 1)
    await waitFor(async () => (await figures(mls.url)).exported === 2, 'the batch counts as exported')
    await tracedTasks(mls.url, 1)
    await waitFor(async () => (await figures(mls.url)).exported === 4, 'the next batch goes out too')
    expect(collector.received).toHaveLength(2)
    expect(written).toBeLessThan(64 * 1024 * 1024)
  })

  test('one that redirects: the spans and the tracing headers do not follow it elsewhere, the batch counts as failed', async () => {
    const elsewhere = hostileCollector(() => Response.json({}))
    const redirecting = hostileCollector(() => new Response(null, { status: 307, headers: { location: `http://localhost:${elsewhere.port}/v1/traces` } }))
    const mls = loggedServer({ tracing: tight(redirecting.url, { headers: { 'x-api-key': 'collector-secret' } }) })
    await tracedHttpAgent(mls.url)
    await tracedTasks(mls.url, 1)
    await waitFor(async () => (await figures(mls.url)).failures === 1, 'the redirected batch counts as failed')
    expect(await figures(mls.url)).toEqual({ exported: 0, dropped: 2, failures: 1 })
    expect(redirecting.received.map((request) => request.headers.get('x-api-key'))).toEqual(['collector-secret'])
    expect(elsewhere.received).toEqual([])
    expect(mls.tracingWarnings()).toHaveLength(1)
    expect(mls.tracingWarnings()[0]).toContain('307')
  })

  test('not listening, at an endpoint with a password and a query: the warning names the collector without either', async () => {
    const port = deadPort()
    const mls = loggedServer({ tracing: tight(`http://moon:hunter2@127.0.0.1:${port}/v1/traces?api_key=s3cret`) })
    await tracedHttpAgent(mls.url)
    await tracedTasks(mls.url, 1)
    await waitFor(() => mls.tracingWarnings().length === 1, 'the warning')
    const [warning] = mls.tracingWarnings()
    expect(warning).toContain(`127.0.0.1:${port}/v1/traces`)
    expect(warning).not.toContain('hunter2')
    expect(warning).not.toContain('s3cret')
  })
})

describe('a reload and a stop while batches are in flight', () => {
  test('a reload to another failing collector warns again, naming the new one', async () => {
    const before = `http://127.0.0.1:${deadPort()}/v1/traces`
    const after = hostileCollector(() => new Response('no', { status: 500 }))
    const mls = loggedServer({ tracing: { endpoint: before, flush_interval: 0.05 } })
    await tracedHttpAgent(mls.url)
    await tracedTasks(mls.url, 1)
    await waitFor(() => mls.tracingWarnings().length === 1, 'the first warning')
    mls.reload({ tracing: { endpoint: after.url, flush_interval: 0.05 } })
    await tracedTasks(mls.url, 1)
    await waitFor(() => after.received.length === 1 && mls.tracingWarnings().length === 2, 'a warning for the new collector')
    expect(mls.tracingWarnings()[1]).toContain(after.url)
  })

  test('a reload that removes tracing while a batch hangs: tasks go on, nothing more is sent, and the spans left are counted as dropped', async () => {
    const { promise: released, resolve: release } = Promise.withResolvers<void>()
    const collector = hostileCollector(async () => {
      await released
      return Response.json({})
    })
    const mls = loggedServer({ tracing: { endpoint: collector.url, flush_interval: 0.05, batch_spans: 2, timeout: 60 } })
    await tracedHttpAgent(mls.url)
    await tracedTasks(mls.url, 3)
    await waitFor(() => collector.received.length === 1, 'the first batch hangs')
    mls.reload({})
    await tracedTasks(mls.url, 2)
    release()
    await waitFor(async () => {
      const { exported, dropped } = await figures(mls.url)
      return exported === 2 && dropped === 4
    }, 'the batch in flight exported, the 4 queued spans dropped')
    expect(collector.received).toHaveLength(1)
  })

  test('a stop with a hung collector ends, and the request left hanging is cut', async () => {
    const collector = hostileCollector(HANG)
    const mls = loggedServer({ tracing: { endpoint: collector.url, flush_interval: 0.05, batch_spans: 2, timeout: 60 } })
    await tracedHttpAgent(mls.url)
    await tracedTasks(mls.url, 3)
    await waitFor(() => collector.received.length === 1, 'the first batch hangs')
    await mls.stop()
    await waitFor(() => collector.received[0]!.aborted, 'the export request is cut')
    expect(collector.received).toHaveLength(1)
  })

  test('moonlight serve stopped by SIGTERM with a hung collector exits, its tasks answered', async () => {
    const collector = hostileCollector(HANG)
    const child = await spawnServe({ tracing: { endpoint: collector.url, flush_interval: 0.05, timeout: 60 } })
    await tracedHttpAgent(child.url)
    await tracedTasks(child.url, 3)
    await waitFor(() => collector.received.length === 1, 'a batch hangs')
    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
  })
})

describe('what spans carry', () => {
  test('no token, payload, agent address or tracing header in what the collector gets', async () => {
    const collector = hostileCollector(() => Response.json({}))
    const mls = loggedServer({ tracing: { endpoint: collector.url, flush_interval: 0.05, headers: { 'x-api-key': 'collector-secret' } } })
    const agent = await startHttpAgent(mls.url, { nodeId: 'h1', region: 'us-east-1', work: () => Response.json({ answer: 'ANSWER-MARKER' }) })
    defer(agent.stop)
    const agentPort = agent.port
    const answered = await postTask(mls.url, { region: 'us-east-1', payload: { secret: 'PAYLOAD-MARKER' } }, [
      ['traceparent', CALLER_PARENT],
      ['tracestate', 'vendor=TRACESTATE-MARKER'],
    ])
    expect(answered.status).toBe(200)
    await waitFor(() => collector.received.some((request) => request.body.includes('moonlight.attempt')), 'the spans')
    const bodies = collector.received.map((request) => request.body).join('\n')
    for (const secret of [TOKEN, 'PAYLOAD-MARKER', 'ANSWER-MARKER', 'TRACESTATE-MARKER', 'collector-secret', `127.0.0.1:${agentPort}`, `"${agentPort}"`])
      expect({ secret, found: bodies.includes(secret) }).toEqual({ secret, found: false })
  })
})
