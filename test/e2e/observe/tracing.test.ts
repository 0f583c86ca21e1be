/**
 * W3C trace context across Moonlight, and spans exported over OTLP/HTTP to a receiver in the test:
 * real server, real HTTP and WebSocket agents, a real collector endpoint on 127.0.0.1.
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { deadPort, postJson, startHttpAgent, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { startOtlpReceiver } from '../../support/otlp-receiver.ts'

const { defer, server } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN = '00f067aa0ba902b7'
const CALLER_PARENT = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/

function postTraced(url: string, body: unknown, headers: Record<string, string> = {}) {
  return postJson(`${url}/task/request`, body, { authorization: `Bearer ${TOKEN}`, ...headers })
}

/** An HTTP agent that keeps each request's trace headers. */
async function tracedHttpAgent(url: string, nodeId: string, status = 200) {
  const seen: Array<{ traceparent: string | null; tracestate: string | null }> = []
  const agent = await startHttpAgent(url, {
    nodeId,
    region: 'us-east-1',
    work: (payload, request) => {
      seen.push({ traceparent: request.headers.get('traceparent'), tracestate: request.headers.get('tracestate') })
      return Response.json({ node: nodeId, echo: payload }, { status })
    },
  })
  defer(agent.stop)
  return { agent, seen }
}

function collector() {
  const receiver = startOtlpReceiver()
  defer(receiver.stop)
  return receiver
}

describe('trace context, tracing off', () => {
  test("an HTTP agent gets the caller's traceparent and tracestate unchanged; none, or an invalid one, sends nothing", async () => {
    const mls = server()
    const { seen } = await tracedHttpAgent(mls.url, 'h1')
    expect((await postTraced(mls.url, { region: 'us-east-1', payload: 1 }, { traceparent: CALLER_PARENT, tracestate: 'vendor=abc' })).status).toBe(200)
    expect((await postTraced(mls.url, { region: 'us-east-1', payload: 2 })).status).toBe(200)
    const zeroTrace = `00-${'0'.repeat(32)}-${CALLER_SPAN}-01`
    expect((await postTraced(mls.url, { region: 'us-east-1', payload: 3 }, { traceparent: zeroTrace, tracestate: 'vendor=abc' })).status).toBe(200)
    expect((await postTraced(mls.url, { region: 'us-east-1', payload: 4 }, { traceparent: CALLER_PARENT.toUpperCase() })).status).toBe(200)
    expect(seen).toEqual([
      { traceparent: CALLER_PARENT, tracestate: 'vendor=abc' },
      { traceparent: null, tracestate: null },
      { traceparent: null, tracestate: null },
      { traceparent: null, tracestate: null },
    ])
  })

  test("a WebSocket agent gets the caller's traceparent and tracestate in the task frame; without one the frame has neither", async () => {
    const mls = server()
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'w1', region: 'us-east-1' })
    defer(agent.close)
    expect((await postTraced(mls.url, { region: 'us-east-1', payload: 'a' }, { traceparent: CALLER_PARENT, tracestate: 'k=v' })).status).toBe(200)
    expect((await postTraced(mls.url, { region: 'us-east-1', payload: 'b' })).status).toBe(200)
    const frames = agent.messages.filter((message) => message.type === 'task')
    expect(frames[0]).toMatchObject({ traceparent: CALLER_PARENT, tracestate: 'k=v', payload: 'a' })
    expect('traceparent' in frames[1]).toBe(false)
    expect('tracestate' in frames[1]).toBe(false)
  })
})

describe('broadcasts', () => {
  /** Two WebSocket agents on the region's topic, one with slots (sent its part on its own) and an HTTP agent. */
  async function broadcastFleet(mls: { url: string; wsUrl: string }) {
    const onTopic = await Promise.all(['w1', 'w2'].map((nodeId) => startWsAgent(mls.wsUrl, { nodeId, region: 'us-east-1' })))
    const slotted = await startWsAgent(mls.wsUrl, { nodeId: 'w3', region: 'us-east-1', register: { max_in_flight: 2 } })
    for (const agent of [...onTopic, slotted]) defer(agent.close)
    const http = await tracedHttpAgent(mls.url, 'h1')
    const frames = () => [...onTopic, slotted].map((agent) => agent.messages.find((message) => message.type === 'task'))
    return { frames, http }
  }

  test("tracing off: every agent of a broadcast gets the caller's traceparent and tracestate, published or sent alone", async () => {
    const mls = server()
    const { frames, http } = await broadcastFleet(mls)
    const result = await postTraced(mls.url, { region: 'us-east-1', payload: 'all', mode: 'broadcast' }, { traceparent: CALLER_PARENT, tracestate: 'k=v' })
    expect(result.status).toBe(200)
    expect(result.json().results).toHaveLength(4)
    for (const frame of frames()) expect(frame).toMatchObject({ traceparent: CALLER_PARENT, tracestate: 'k=v', payload: 'all' })
    expect(http.seen).toEqual([{ traceparent: CALLER_PARENT, tracestate: 'k=v' }])
  })

  test('tracing on: a broadcast is one task span and one broadcast span, the parent every agent gets', async () => {
    const receiver = collector()
    const mls = server({ tracing: { endpoint: receiver.url, flush_interval: 0.05 } })
    const { frames, http } = await broadcastFleet(mls)
    const result = await postTraced(mls.url, { region: 'us-east-1', payload: 'all', mode: 'broadcast' }, { traceparent: CALLER_PARENT })
    expect(result.status).toBe(200)
    await waitFor(() => receiver.spans.length >= 2, 'the spans are exported')
    const task = receiver.spans.find((span) => span.name === 'moonlight.task')!
    const fanOut = receiver.spans.find((span) => span.name === 'moonlight.broadcast')!
    expect(task).toMatchObject({ traceId: CALLER_TRACE, parentSpanId: CALLER_SPAN, kind: 2 })
    expect(task.attributes).toMatchObject({
      'moonlight.task_id': result.headers.get('x-task-id'),
      'moonlight.mode': 'broadcast',
      'moonlight.outcome': 'ok',
      'moonlight.attempts': 4,
      'moonlight.answered': 4,
      'http.response.status_code': 200,
    })
    expect(fanOut).toMatchObject({ traceId: CALLER_TRACE, parentSpanId: task.spanId, kind: 3 })
    expect(fanOut.attributes).toMatchObject({ 'moonlight.clients': 4, 'http.response.status_code': 200 })
    expect(BigInt(fanOut.startTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(task.startTimeUnixNano))
    expect(BigInt(fanOut.endTimeUnixNano)).toBeLessThanOrEqual(BigInt(task.endTimeUnixNano))
    const parent = `00-${CALLER_TRACE}-${fanOut.spanId}-01`
    for (const frame of frames()) expect(frame).toMatchObject({ traceparent: parent })
    expect(http.seen.map((headers) => headers.traceparent)).toEqual([parent])
    expect(receiver.spans.filter((span) => span.name === 'moonlight.attempt')).toEqual([])
  })
})

describe('stored tasks', () => {
  test("an async task keeps the caller's trace: GET /task/{id} shows its trace_id, the agent gets it when the task runs, spans under the caller's", async () => {
    const receiver = collector()
    const mls = server({ tracing: { endpoint: receiver.url, flush_interval: 0.05 } })
    const { seen } = await tracedHttpAgent(mls.url, 'h1')
    const accepted = await postTraced(mls.url, { region: 'us-east-1', payload: 'later', mode: 'async' }, { traceparent: CALLER_PARENT })
    expect(accepted.status).toBe(202)
    const { task_id } = accepted.json()
    await waitFor(async () => (await getJson(`${mls.url}/task/${task_id}`)).state === 'done', 'the task is done')
    expect(await getJson(`${mls.url}/task/${task_id}`)).toMatchObject({ state: 'done', trace_id: CALLER_TRACE })
    await waitFor(() => receiver.spans.length >= 2, 'the spans are exported')
    const task = receiver.spans.find((span) => span.name === 'moonlight.task')!
    const attempt = receiver.spans.find((span) => span.name === 'moonlight.attempt')!
    expect([task.traceId, task.parentSpanId, task.attributes['moonlight.task_id'], attempt.parentSpanId]).toEqual([
      CALLER_TRACE,
      CALLER_SPAN,
      task_id,
      task.spanId,
    ])
    expect(seen[0]!.traceparent).toBe(`00-${CALLER_TRACE}-${attempt.spanId}-01`)
  })

  test('without a trace, the task view has no trace_id (tracing off)', async () => {
    const mls = server()
    await tracedHttpAgent(mls.url, 'h1')
    const accepted = await postTraced(mls.url, { region: 'us-east-1', payload: 'later', mode: 'async' })
    const { task_id } = accepted.json()
    await waitFor(async () => (await getJson(`${mls.url}/task/${task_id}`)).state === 'done', 'the task is done')
    expect('trace_id' in (await getJson(`${mls.url}/task/${task_id}`))).toBe(false)
  })
})

describe('tracing on: spans exported over OTLP/HTTP', () => {
  test("the task span continues the caller's trace, each attempt is its child and the agent's parent; names, attributes and timing", async () => {
    const receiver = collector()
    const mls = server({ retry_count: 1, tracing: { endpoint: receiver.url, flush_interval: 0.05, headers: { 'x-api-key': 'k1' } } })
    const failing = await tracedHttpAgent(mls.url, 'broken', 500)
    const good = await tracedHttpAgent(mls.url, 'good')
    const before = BigInt(Date.now()) * 1_000_000n
    const answered = await postTraced(mls.url, { region: 'us-east-1', payload: 'x' }, { traceparent: CALLER_PARENT, tracestate: 'k=v' })
    const after = BigInt(Date.now() + 1) * 1_000_000n
    expect(answered.status).toBe(200)
    await waitFor(() => receiver.spans.length >= 2, 'the spans are exported')
    const taskId = answered.headers.get('x-task-id')

    const task = receiver.spans.find((span) => span.name === 'moonlight.task')!
    const attempts = receiver.spans.filter((span) => span.name === 'moonlight.attempt')
    expect(task).toMatchObject({ traceId: CALLER_TRACE, parentSpanId: CALLER_SPAN, kind: 2 })
    expect(task.attributes).toMatchObject({
      'moonlight.task_id': taskId,
      'moonlight.region': 'us-east-1',
      'moonlight.mode': 'single',
      'moonlight.outcome': 'ok',
      'http.response.status_code': 200,
    })
    expect(task.resource).toMatchObject({ 'service.name': 'moonlight' })
    expect(receiver.requests[0]!.contentType).toBe('application/json')
    expect(receiver.requests[0]!.headers.get('x-api-key')).toBe('k1')

    // However the balancer ordered them, each agent saw its own attempt's span as its parent, in the caller's trace.
    const sent = [...failing.seen, ...good.seen]
    expect(attempts.length).toBe(sent.length)
    expect(task.attributes['moonlight.attempts']).toBe(sent.length)
    for (const attempt of attempts) {
      expect(attempt).toMatchObject({ traceId: CALLER_TRACE, parentSpanId: task.spanId, kind: 3 })
      const seen = (attempt.attributes['moonlight.node_id'] === 'good' ? good : failing).seen
      expect(seen.map((headers) => headers.traceparent)).toContain(`00-${CALLER_TRACE}-${attempt.spanId}-01`)
      expect(seen.every((headers) => headers.tracestate === 'k=v')).toBe(true)
      expect(attempt.attributes['moonlight.protocol']).toBe('http')
      expect(BigInt(attempt.startTimeUnixNano)).toBeGreaterThanOrEqual(BigInt(task.startTimeUnixNano))
      expect(BigInt(attempt.endTimeUnixNano)).toBeLessThanOrEqual(BigInt(task.endTimeUnixNano))
      expect(BigInt(attempt.startTimeUnixNano)).toBeLessThanOrEqual(BigInt(attempt.endTimeUnixNano))
    }
    const failed = attempts.find((attempt) => attempt.attributes['moonlight.node_id'] === 'broken')
    expect([failed?.attributes['http.response.status_code'], failed?.status?.code]).toEqual([500, 2])
    expect(BigInt(task.startTimeUnixNano)).toBeGreaterThanOrEqual(before - 1_000_000n)
    expect(BigInt(task.endTimeUnixNano)).toBeLessThanOrEqual(after)
  })

  test('with no traceparent from the caller Moonlight starts a trace: the agent gets its id, the task span has no parent', async () => {
    const receiver = collector()
    const mls = server({ tracing: { endpoint: receiver.url, flush_interval: 0.05 } })
    const { seen } = await tracedHttpAgent(mls.url, 'h1')
    expect((await postTraced(mls.url, { region: 'us-east-1', payload: 1 })).status).toBe(200)
    await waitFor(() => receiver.spans.length >= 2, 'the spans are exported')
    const [, traceId, parentId] = TRACEPARENT.exec(seen[0]!.traceparent ?? '')!
    const task = receiver.spans.find((span) => span.name === 'moonlight.task')!
    const attempt = receiver.spans.find((span) => span.name === 'moonlight.attempt')!
    expect([task.traceId, task.parentSpanId, attempt.spanId, attempt.parentSpanId]).toEqual([traceId, undefined, parentId, task.spanId])
  })

  test('a task that waits for a slot has a moonlight.queue span under its task span', async () => {
    const receiver = collector()
    const mls = server({ tracing: { endpoint: receiver.url, flush_interval: 0.05 }, queue: { timeout: 5 } })
    let release: (() => void) | undefined
    const agent = await startHttpAgent(mls.url, {
      nodeId: 'one-slot',
      region: 'us-east-1',
      work: async (payload) => {
        if (payload === 'first') await new Promise<void>((resolve) => (release = resolve))
        return Response.json({ payload })
      },
    })
    defer(agent.stop)
    await agent.heartbeat({ max_in_flight: 1 })
    const first = postTraced(mls.url, { region: 'us-east-1', payload: 'first' })
    await waitFor(() => release !== undefined, 'the first task holds the slot')
    const second = postTraced(mls.url, { region: 'us-east-1', payload: 'second' }, { traceparent: CALLER_PARENT })
    await Bun.sleep(100)
    release!()
    expect([(await first).status, (await second).status]).toEqual([200, 200])
    await waitFor(() => receiver.spans.some((span) => span.name === 'moonlight.queue'), 'the queue span is exported')
    const task = receiver.spans.find((span) => span.name === 'moonlight.task' && span.traceId === CALLER_TRACE)!
    const queue = receiver.spans.find((span) => span.name === 'moonlight.queue')!
    expect([queue.traceId, queue.parentSpanId, queue.kind]).toEqual([CALLER_TRACE, task.spanId, 1])
    expect(Number(BigInt(queue.endTimeUnixNano) - BigInt(queue.startTimeUnixNano))).toBeGreaterThan(50_000_000)
  })

  test('a WebSocket agent gets the trace in its task frame, with its attempt span as the parent', async () => {
    const receiver = collector()
    const mls = server({ tracing: { endpoint: receiver.url, flush_interval: 0.05 } })
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'w1', region: 'us-east-1' })
    defer(agent.close)
    expect((await postTraced(mls.url, { region: 'us-east-1', payload: 'a' }, { traceparent: CALLER_PARENT })).status).toBe(200)
    await waitFor(() => receiver.spans.length >= 2, 'the spans are exported')
    const attempt = receiver.spans.find((span) => span.name === 'moonlight.attempt')!
    expect(agent.messages.find((message) => message.type === 'task').traceparent).toBe(`00-${CALLER_TRACE}-${attempt.spanId}-01`)
    expect(attempt.attributes['moonlight.protocol']).toBe('ws')
  })

  test('the collector down: tasks are answered all the same, and the spans are dropped and counted in /metrics', async () => {
    const mls = server({ tracing: { endpoint: `http://127.0.0.1:${deadPort()}/v1/traces`, flush_interval: 0.05 } })
    await tracedHttpAgent(mls.url, 'h1')
    for (let i = 0; i < 3; i++) expect((await postTraced(mls.url, { region: 'us-east-1', payload: i }, { traceparent: CALLER_PARENT })).status).toBe(200)
    const dropped = async () => {
      const text = await (await fetch(`${mls.url}/metrics`)).text()
      return Number(/^moonlight_trace_spans_dropped_total (\d+)$/m.exec(text)?.[1] ?? 0)
    }
    await waitFor(async () => (await dropped()) >= 6, '6 spans (3 tasks, 3 attempts) counted as dropped')
    const text = await (await fetch(`${mls.url}/metrics`)).text()
    expect(text).toMatch(/^moonlight_trace_spans_exported_total 0$/m)
    expect(text).toMatch(/^moonlight_trace_export_failures_total [1-9]\d*$/m)
  })
})

describe('through a cluster relay', () => {
  test("a WebSocket agent held by instance B gets the caller's trace from a task sent to A, its parent A's attempt span", async () => {
    const receiver = collector()
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { tracing: { endpoint: receiver.url, flush_interval: 0.05 } })
    const b = await instance(redis.url, 'b')
    const agent = await wsAgent(b, { nodeId: 'far', region: 'us-east-1' })
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((client: { node_id: string }) => client.node_id === 'far'), 'A lists far')
    const answered = await postTraced(a.url, { region: 'us-east-1', payload: 'relayed' }, { traceparent: CALLER_PARENT, tracestate: 'k=v' })
    expect([answered.status, answered.headers.get('x-moonlight-instance')]).toEqual([200, 'b'])
    await waitFor(() => receiver.spans.length >= 2, 'the spans are exported')
    const attempt = receiver.spans.find((span) => span.name === 'moonlight.attempt')!
    expect(attempt.attributes['moonlight.protocol']).toBe('relay')
    expect(agent.messages.find((message) => message.type === 'task')).toMatchObject({
      traceparent: `00-${CALLER_TRACE}-${attempt.spanId}-01`,
      tracestate: 'k=v',
      payload: 'relayed',
    })
    expect(receiver.spans.find((span) => span.name === 'moonlight.task')!.resource['service.instance.id']).toBe('a')
  })
})
