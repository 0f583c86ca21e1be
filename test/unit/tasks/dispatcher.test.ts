import { describe, expect, test } from 'bun:test'
import type { AttemptRecord } from '../../../src/observe/task-stats.ts'
import type { SpanRecord } from '../../../src/observe/tracing/span.ts'
import { Tracer } from '../../../src/observe/tracing/tracer.ts'
import { type BroadcastOutcome, type BroadcastPart, broadcastJson } from '../../../src/tasks/broadcast.ts'
import { Dispatcher } from '../../../src/tasks/dispatcher.ts'
import type { Outcome } from '../../../src/tasks/outcome.ts'
import type { SlotQueue } from '../../../src/tasks/slot-waiting.ts'
import type { Answer, FailureKind } from '../../../src/transports/types.ts'
import type { FakeClock } from '../../support/fake-clock.ts'
import { answers, FakeFanOutTransport, FakeTransport, failsWith, hangs, inTurn, settle, TEST_POLICY, taskCore } from '../../support/fake-transport.ts'

const JSON_TYPE = { 'content-type': 'application/json' }

/** Narrows an outcome to one kind, failing the test with the whole outcome when it is another. */
function expectKind<Kind extends Outcome['kind']>(outcome: Outcome, kind: Kind): Extract<Outcome, { kind: Kind }> {
  expect({ kind: outcome.kind, outcome }).toMatchObject({ kind })
  return outcome as Extract<Outcome, { kind: Kind }>
}

/** A trace the real tracer records (sampled), and the spans it sends when its task ends. */
function recordedTrace(clock: FakeClock) {
  const spans: SpanRecord[] = []
  const trace = new Tracer(
    () => ({ sample_ratio: 1 }),
    clock,
    (sent) => void spans.push(...sent),
  ).begin(undefined)!
  return { spans, trace }
}

function delivered(outcome: BroadcastOutcome) {
  if (outcome.kind !== 'delivered') throw new Error(`expected a delivered broadcast, got ${JSON.stringify(outcome)}`)
  return outcome.results
}

describe('dispatcher', () => {
  test('a task answered on the first try returns the answer and the client, and leaves nothing in flight', async () => {
    const http = new FakeTransport(answers(200, '{"echo":[1, 2]}'))
    const core = taskCore({ http })
    const east = core.join('east', 'us-east-1')
    const outcome = expectKind(await core.dispatcher.dispatch('us-east-1', '{"n": 1}', 't-1'), 'answered')
    expect(outcome.answer).toEqual({ status: 200, headers: JSON_TYPE, body: '{"echo":[1, 2]}' })
    expect(outcome.client).toBe(east)
    expect(outcome.failedAttempts).toEqual([])
    // The payload goes out as the caller's own text.
    expect(http.sent.map(({ nodeId, taskId, payloadJson }) => ({ nodeId, taskId, payloadJson }))).toEqual([
      { nodeId: 'east', taskId: 't-1', payloadJson: '{"n": 1}' },
    ])
    expect(east).toMatchObject({ successes: 1, failures: 0, inFlight: 0 })
    expect(core.load.inFlight).toBe(0)
    expect(core.deadlines.size).toBe(0)
  })

  test('a 5xx is retried on another client, and the answer lists the attempt that failed', async () => {
    const http = new FakeTransport({ a: answers(503, 'busy'), b: answers(200, '"done"') })
    const core = taskCore({ http })
    const a = core.join('a', 'usa')
    core.join('b', 'usa')
    const outcome = expectKind(await core.dispatcher.dispatch('usa', '1', 't-1'), 'answered')
    expect(http.sentTo).toEqual(['a', 'b'])
    expect(outcome.client.nodeId).toBe('b')
    expect(outcome.failedAttempts).toEqual([{ node_id: 'a', kind: 'status', reason: 'answered 503', status: 503, body: 'busy' }])
    expect(a).toMatchObject({ failures: 1, consecutiveFailures: 1 })
  })

  test('when every attempt answers 5xx the task is all_failed, listing each attempt with its status and the start of its body', async () => {
    const long = 'x'.repeat(2000)
    const http = new FakeTransport({ a: answers(500, '{"error":"disk full"}'), b: answers(502, long) })
    const core = taskCore({ http, settings: { retryCount: 1 } })
    core.join('a', 'usa')
    core.join('b', 'usa')
    const outcome = expectKind(await core.dispatcher.dispatch('usa', '1', 't-1'), 'all_failed')
    expect(outcome.region).toBe('usa')
    expect(outcome.failedAttempts).toEqual([
      { node_id: 'a', kind: 'status', reason: 'answered 500', status: 500, body: '{"error":"disk full"}' },
      // Only the start of a long body: 1024 characters and an ellipsis.
      { node_id: 'b', kind: 'status', reason: 'answered 502', status: 502, body: `${'x'.repeat(1024)}…` },
    ])
  })

  test('an attempt that got no answer but may be safely repeated is retried on another client and counted against the first', async () => {
    const retryable: FailureKind[] = ['unreachable', 'disconnected', 'dropped', 'invalid_answer']
    for (const kind of retryable) {
      const http = new FakeTransport({ a: failsWith(kind, `a: ${kind}`), b: answers(200, '"ok"') })
      const core = taskCore({ http })
      const a = core.join('a', 'usa')
      core.join('b', 'usa')
      const outcome = expectKind(await core.dispatcher.dispatch('usa', '1', 't-1'), 'answered')
      expect({ kind, sentTo: http.sentTo, failed: outcome.failedAttempts }).toEqual({
        kind,
        sentTo: ['a', 'b'],
        failed: [{ node_id: 'a', kind, reason: `a: ${kind}` }],
      })
      expect({ kind, failures: a.failures }).toEqual({ kind, failures: 1 })
    }
  })

  test('a timeout is timed_out once task_timeout passes, and is not retried even with another client free', async () => {
    const http = new FakeTransport({ a: hangs(), b: answers(200, '"ok"') })
    const core = taskCore({ http, settings: { taskTimeoutMs: 5000 } })
    const a = core.join('a', 'usa')
    core.join('b', 'usa')
    let outcome: Outcome | undefined
    void core.dispatcher.dispatch('usa', '1', 't-1').then((result) => (outcome = result))
    core.clock.advance(4999)
    await settle()
    expect(outcome).toBeUndefined()
    core.clock.advance(1)
    await settle()
    const timedOut = expectKind(outcome!, 'timed_out')
    expect(timedOut).toMatchObject({
      region: 'usa',
      timeoutMs: 5000,
      failedAttempts: [{ node_id: 'a', kind: 'timeout', reason: 'timed out waiting for the client' }],
    })
    expect(http.sentTo).toEqual(['a'])
    // The client may still be working on it, but it did not answer in time: that counts against it.
    expect(a).toMatchObject({ failures: 1, inFlight: 0 })
  })

  test('an answer too large is too_large, not retried, and gives no verdict on the client', async () => {
    const http = new FakeTransport({ a: failsWith('too_large', 'answer over max_answer_bytes'), b: answers(200, '"ok"') })
    const core = taskCore({ http })
    const a = core.join('a', 'usa')
    core.join('b', 'usa')
    const outcome = expectKind(await core.dispatcher.dispatch('usa', '1', 't-1'), 'too_large')
    expect(outcome.failedAttempts).toEqual([{ node_id: 'a', kind: 'too_large', reason: 'answer over max_answer_bytes' }])
    expect(http.sentTo).toEqual(['a'])
    expect(a).toMatchObject({ state: 'healthy', failures: 0, successes: 0, consecutiveFailures: 0 })
  })

  test('an answer too large on a probation trial ends the trial without a verdict: the next task is the next trial', async () => {
    const http = new FakeTransport({ a: inTurn(failsWith('too_large'), answers(200, '"ok"')) })
    // Alone in its pool, a client may be ejected only at 100%.
    const core = taskCore({ http, policy: { ...TEST_POLICY, failuresToEject: 1, maxEjectedPercent: 100 } })
    const a = core.join('a', 'usa')
    core.registry.recordFailure(a, core.clock.now())
    expect(core.registry.endBackoffs(core.clock.now() + 1000)).toEqual([a])
    expectKind(await core.dispatcher.dispatch('usa', '1', 't-1'), 'too_large')
    expect(a).toMatchObject({ state: 'probation', trialInFlight: false })
    expect(core.registry.canTakeTasks(a)).toBe(true)
    expectKind(await core.dispatcher.dispatch('usa', '2', 't-2'), 'answered')
    expect(a.state).toBe('healthy')
    expect(http.sentTo).toEqual(['a', 'a'])
  })

  test('a failed trial ejects the client again; while a trial is under way the client gets no other task', async () => {
    const http = new FakeTransport({ a: hangs() })
    const core = taskCore({ http, policy: { ...TEST_POLICY, failuresToEject: 1, maxEjectedPercent: 100 }, settings: { taskTimeoutMs: 1000 } })
    const a = core.join('a', 'usa')
    core.registry.recordFailure(a, core.clock.now())
    core.registry.endBackoffs(core.clock.now() + 1000)
    const trial = core.dispatcher.dispatch('usa', '1', 't-1')
    expect(a.trialInFlight).toBe(true)
    expectKind(await core.dispatcher.dispatch('usa', '2', 't-2'), 'no_client')
    core.clock.advance(1000)
    expectKind(await trial, 'timed_out')
    expect(a).toMatchObject({ state: 'ejected', ejections: 2 })
  })

  test('a late answer from an attempt begun before the client was ejected does not end its ejection', async () => {
    let answerLate: (answer: Answer) => void = () => {}
    const late = new Promise<Answer>((resolve) => (answerLate = resolve))
    const http = new FakeTransport({ a: inTurn(() => late, answers(500, 'no')), b: answers(200, '"b"') })
    const core = taskCore({ http, policy: { ...TEST_POLICY, failuresToEject: 1 }, settings: { retryCount: 0 } })
    const a = core.join('a', 'usa')
    core.join('b', 'usa')
    const slow = core.dispatcher.dispatch('usa', '1', 't-1')
    expectKind(await core.dispatcher.dispatch('usa', '2', 't-2'), 'answered')
    expectKind(await core.dispatcher.dispatch('usa', '3', 't-3'), 'all_failed')
    expect(http.sentTo).toEqual(['a', 'b', 'a'])
    expect(a.state).toBe('ejected')
    answerLate({ status: 200, headers: JSON_TYPE, body: '"late"' })
    expectKind(await slow, 'answered')
    // Ejected until its back-off ends: the answer to a task it was given before says nothing new.
    expect(a.state).toBe('ejected')
    await core.dispatcher.dispatch('usa', '4', 't-4')
    await core.dispatcher.dispatch('usa', '5', 't-5')
    expect(http.sentTo.slice(3)).toEqual(['b', 'b'])
  })

  test('no eligible client at or above the region is no_client, with nothing sent', async () => {
    const http = new FakeTransport()
    const core = taskCore({ http })
    expect(await core.dispatcher.dispatch('us-east-1', '1', 't-1')).toEqual({ kind: 'no_client', region: 'us-east-1' })
    // A draining client takes no new tasks.
    core.join('drained', 'us-east-1', { weight: 0 })
    expect(await core.dispatcher.dispatch('us-east-1', '1', 't-2')).toEqual({ kind: 'no_client', region: 'us-east-1' })
    expect(http.sent).toEqual([])
  })

  test('a region with no client of its own climbs the hierarchy', async () => {
    const core = taskCore()
    core.join('eu', 'eu-west-1')
    expect(expectKind(await core.dispatcher.dispatch('us-east-1', '1', 't-1'), 'answered').client.nodeId).toBe('eu')
  })

  test('retry_count bounds the attempts to retry_count + 1', async () => {
    for (const retryCount of [0, 1, 2]) {
      const http = new FakeTransport(answers(500, 'no'))
      const core = taskCore({ http, settings: { retryCount } })
      for (const node of ['a', 'b', 'c', 'd']) core.join(node, 'usa')
      const outcome = expectKind(await core.dispatcher.dispatch('usa', '1', 't-1'), 'all_failed')
      expect({ retryCount, attempts: outcome.failedAttempts.length }).toEqual({ retryCount, attempts: retryCount + 1 })
      expect(http.sentTo).toEqual(['a', 'b', 'c', 'd'].slice(0, retryCount + 1))
    }
  })

  test('the same client is tried again only when it is alone', async () => {
    const alone = taskCore({ http: new FakeTransport(answers(500, 'no')) })
    alone.join('a', 'usa')
    expectKind(await alone.dispatcher.dispatch('usa', '1', 't-1'), 'all_failed')
    expect(alone.transports.http.sentTo).toEqual(['a', 'a', 'a', 'a'])

    // Two clients: each retry goes to the other one, never the one that just failed.
    const pair = taskCore({ http: new FakeTransport(answers(500, 'no')) })
    pair.join('a', 'usa')
    pair.join('b', 'usa')
    expectKind(await pair.dispatcher.dispatch('usa', '1', 't-1'), 'all_failed')
    expect(pair.transports.http.sentTo).toEqual(['a', 'b', 'a', 'b'])

    // Even when the balancer, left to itself, would give the heavier one two in a row.
    const weighted = taskCore({ http: new FakeTransport(answers(500, 'no')), settings: { retryCount: 5 } })
    weighted.join('a', 'usa', { weight: 2 })
    weighted.join('b', 'usa')
    expectKind(await weighted.dispatcher.dispatch('usa', '1', 't-1'), 'all_failed')
    expect(weighted.transports.http.sentTo).toEqual(['a', 'b', 'a', 'b', 'a', 'b'])
  })

  test("a 4xx is the client's answer: passed back, not retried, and not held against the client", async () => {
    const http = new FakeTransport({ a: answers(422, '{"error":"bad payload"}'), b: answers(200, '"ok"') })
    const core = taskCore({ http })
    const a = core.join('a', 'usa')
    core.join('b', 'usa')
    const outcome = expectKind(await core.dispatcher.dispatch('usa', '1', 't-1'), 'answered')
    expect(outcome.answer.status).toBe(422)
    expect(http.sentTo).toEqual(['a'])
    expect(a).toMatchObject({ successes: 1, failures: 0 })
  })

  test('a task that arrives while the server is closing is shutting_down, with nothing sent', async () => {
    const http = new FakeTransport()
    const core = taskCore({ http })
    core.join('a', 'usa')
    core.load.closing = true
    expect(await core.dispatcher.dispatch('usa', '1', 't-1')).toEqual({ kind: 'shutting_down', region: 'usa', failedAttempts: [] })
    expect(http.sent).toEqual([])
  })

  test('an attempt cut off by the stop ends shutting_down and is not held against the client', async () => {
    const core = taskCore({ http: new FakeTransport(hangs()) })
    const a = core.join('a', 'usa')
    core.join('b', 'usa')
    const pending = core.dispatcher.dispatch('usa', '1', 't-1')
    expect(core.load.inFlight).toBe(1)
    core.load.closing = true
    core.deadlines.expireAll()
    // midAttempt: the client had the task, so a keyed task keeps its key (see reachedNoClient).
    expect(await pending).toEqual({ kind: 'shutting_down', region: 'usa', failedAttempts: [], midAttempt: true })
    expect(core.transports.http.sentTo).toEqual(['a'])
    expect(a).toMatchObject({ failures: 0, consecutiveFailures: 0, inFlight: 0 })
    expect(core.load.inFlight).toBe(0)
  })

  test('a transport that throws something other than an AttemptError is a bug, not a failed attempt: the dispatch rejects and nothing stays in flight', async () => {
    const core = taskCore({ http: new FakeTransport(() => Promise.reject(new TypeError('oops'))) })
    const a = core.join('a', 'usa')
    core.join('b', 'usa')
    await expect(core.dispatcher.dispatch('usa', '1', 't-1')).rejects.toThrow('oops')
    expect(core.transports.http.sentTo).toEqual(['a'])
    expect(a).toMatchObject({ failures: 0, inFlight: 0 })
    expect(core.load.inFlight).toBe(0)
    expect(core.deadlines.size).toBe(0)
  })

  test('a task ended by such a bug still counts: recorded as failed with the 500 its caller gets, its attempt listed, its trace sent', async () => {
    const core = taskCore({ http: new FakeTransport(() => Promise.reject(new TypeError('oops'))) })
    core.join('a', 'usa')
    const { spans, trace } = recordedTrace(core.clock)
    await expect(core.dispatcher.dispatch('usa', '1', 't-1', undefined, undefined, trace)).rejects.toThrow('oops')
    expect(core.finished).toHaveLength(1)
    expect(core.finished[0]).toMatchObject({ task_id: 't-1', region: 'usa', mode: 'single', node_id: 'a', status: 500, outcome: 'failed', attempts: 1 })
    // Said to have failed, and how: an attempt without a kind reads as answered (the client's detail page).
    expect(core.finished[0]!.tries).toEqual([{ node_id: 'a', kind: 'internal', ms: 0 }])
    expect(core.finished[0]!.trace_id).toBe(trace.traceId)
    expect(spans.map((span) => [span.name, span.failed, span.attributes['http.response.status_code']])).toEqual([
      ['moonlight.task', 'failed', 500],
      ['moonlight.attempt', 'internal', undefined],
    ])
  })

  test('a bug whose record cannot be made either: the first bug is what the caller and the log get', async () => {
    const core = taskCore({ http: new FakeTransport(() => Promise.reject(new TypeError('oops'))) })
    core.join('a', 'usa')
    const trace = new Tracer(
      () => ({ sample_ratio: 1 }),
      core.clock,
      () => {
        throw new Error('the exporter broke too')
      },
    ).begin(undefined)
    await expect(core.dispatcher.dispatch('usa', '1', 't-1', undefined, undefined, trace)).rejects.toThrow('oops')
    expect(core.load.inFlight).toBe(0)
  })

  test('a queue wait that throws (a bug) still ends its queue span when it stops waiting', async () => {
    const core = taskCore()
    const slots = {
      waitAfter: async () => {
        core.clock.advance(250)
        throw new TypeError('queue bug')
      },
    }
    const dispatcher = new Dispatcher({
      registry: core.registry,
      transports: core.transports,
      settings: () => core.settings,
      deadlines: core.deadlines,
      load: core.load,
      clock: core.clock,
      onFinished: (record) => void core.finished.push(record),
      slots: slots as unknown as SlotQueue,
    })
    const { spans, trace } = recordedTrace(core.clock)
    await expect(dispatcher.dispatch('usa', '1', 't-1', undefined, undefined, trace)).rejects.toThrow('queue bug')
    const queue = spans.find((span) => span.name === 'moonlight.queue')!
    expect(queue.endMonotonicMs - queue.startMonotonicMs).toBe(250)
    expect(core.finished).toMatchObject([{ status: 500, outcome: 'failed', attempts: 0, node_id: null }])
  })

  test('onFinished records the status, outcome and attempts of each way a task ends, with every attempt (node, status or failure, time)', async () => {
    const cases = [
      {
        name: 'answered after a retry',
        reply: { a: answers(500, 'no'), b: answers(201, '"ok"') },
        nodes: ['a', 'b'],
        record: { status: 201, outcome: 'ok', attempts: 2, node_id: 'b' },
        tries: [
          { node_id: 'a', status: 500, kind: 'status', ms: 0 },
          { node_id: 'b', status: 201, ms: 0 },
        ],
      },
      {
        name: 'all failed',
        reply: { a: answers(500, 'no') },
        nodes: ['a'],
        record: { status: 502, outcome: 'failed', attempts: 4, node_id: 'a' },
        tries: Array.from({ length: 4 }, () => ({ node_id: 'a', status: 500, kind: 'status', ms: 0 })),
      },
      {
        name: 'too large',
        reply: { a: failsWith('too_large') },
        nodes: ['a'],
        record: { status: 502, outcome: 'failed', attempts: 1, node_id: 'a' },
        tries: [{ node_id: 'a', kind: 'too_large', ms: 0 }],
      },
      {
        name: 'timed out',
        reply: { a: hangs() },
        nodes: ['a'],
        record: { status: 504, outcome: 'timeout', attempts: 1, node_id: 'a' },
        tries: [{ node_id: 'a', kind: 'timeout', ms: 2000 }],
      },
      { name: 'no client', reply: {}, nodes: [], record: { status: 503, outcome: 'no_client', attempts: 0, node_id: null }, tries: [] },
    ] as const
    for (const { name, reply, nodes, record, tries } of cases) {
      const core = taskCore({ http: new FakeTransport(reply), settings: { taskTimeoutMs: 2000 } })
      for (const node of nodes) core.join(node, 'usa')
      const startedMs = core.clock.now()
      const pending = core.dispatcher.dispatch('usa', '1', 't-1')
      if (name === 'timed out') core.clock.advance(2000)
      await pending
      expect({ name, finished: core.finished }).toEqual({
        name,
        finished: [
          {
            task_id: 't-1',
            region: 'usa',
            mode: 'single',
            ...record,
            latency_ms: core.clock.now() - startedMs,
            // The fake clock moves wall and monotonic time together: the precise duration is the same span.
            durationMs: core.clock.now() - startedMs,
            finishedAtMs: core.clock.now(),
            tries: [...tries] as AttemptRecord[],
          },
        ],
      })
    }
  })

  test('a stopped task is recorded as failed with 503', async () => {
    const core = taskCore()
    core.load.closing = true
    await core.dispatcher.dispatch('usa', '1', 't-1')
    expect(core.finished).toMatchObject([{ status: 503, outcome: 'failed', attempts: 0, node_id: null }])
  })

  test('each client is reached through the transport of its protocol', async () => {
    const http = new FakeTransport()
    const ws = new FakeTransport()
    const core = taskCore({ http, ws })
    core.join('over-http', 'us-east-1')
    core.join('over-ws', 'eu-west-1', { protocol: 'ws' })
    await core.dispatcher.dispatch('us-east-1', '1', 't-1')
    await core.dispatcher.dispatch('eu-west-1', '2', 't-2')
    expect(http.sentTo).toEqual(['over-http'])
    expect(ws.sentTo).toEqual(['over-ws'])
  })
})

describe('broadcaster', () => {
  test('every eligible client at or under the region gets the task; none above it or elsewhere', async () => {
    const http = new FakeTransport()
    const core = taskCore({ http })
    core.join('east', 'us-east-1')
    core.join('west', 'us-west-1')
    core.join('at-usa', 'usa')
    core.join('above', 'northamerica')
    core.join('eu', 'eu-west-1')
    core.join('drained', 'us-east-1', { weight: 0 })
    const results = delivered(await core.broadcaster.broadcast('usa', '"all"', 't-1'))
    expect(results.map((result) => result.node_id)).toEqual(['east', 'west', 'at-usa'])
    expect(http.sentTo).toEqual(['east', 'west', 'at-usa'])
  })

  test('no client at or under the region is no_client, even when one above it could answer', async () => {
    const core = taskCore()
    core.join('eu', 'eu-west-1')
    core.join('above', 'northamerica')
    expect(await core.broadcaster.broadcast('usa', '1', 't-1')).toEqual({ kind: 'no_client', region: 'usa' })
    expect(core.transports.http.sent).toEqual([])
    expect(core.finished).toMatchObject([{ task_id: 't-1', mode: 'broadcast', status: 503, outcome: 'no_client', attempts: 0, node_id: null }])
  })

  test('a transport with a fan-out gets one fanOut for all its clients; one without gets a send each', async () => {
    const http = new FakeTransport()
    const ws = new FakeFanOutTransport()
    const core = taskCore({ http, ws })
    core.join('h1', 'us-east-1')
    core.join('w1', 'us-east-1', { protocol: 'ws' })
    core.join('h2', 'us-west-1')
    core.join('w2', 'us-west-1', { protocol: 'ws' })
    const results = delivered(await core.broadcaster.broadcast('usa', '{"x":1}', 't-1'))
    expect(ws.fanOuts).toEqual([{ region: 'usa', taskId: 't-1', payloadJson: '{"x":1}', nodeIds: ['w1', 'w2'] }])
    expect(ws.sent).toEqual([])
    expect(http.sentTo).toEqual(['h1', 'h2'])
    expect(results.map(({ node_id, protocol }) => [node_id, protocol])).toEqual([
      ['h1', 'http'],
      ['w1', 'ws'],
      ['h2', 'http'],
      ['w2', 'ws'],
    ])
  })

  test("each client's result is its own: its status and answer, or why it has none", async () => {
    const http = new FakeTransport({
      json: answers(200, ' {"n": 12345678901234567890} '),
      text: answers(200, 'plain words', { 'content-type': 'text/plain' }),
      'says-json': answers(200, 'not json at all'),
      broken: answers(500, '{"error":"disk full"}'),
      gone: failsWith('unreachable', 'cannot reach gone'),
      mute: hangs(),
    })
    const core = taskCore({ http, settings: { taskTimeoutMs: 3000 } })
    for (const node of ['json', 'text', 'says-json', 'broken', 'gone', 'mute']) core.join(node, 'usa')
    const pending = core.broadcaster.broadcast('usa', '1', 't-1')
    core.clock.advance(3000)
    expect(delivered(await pending)).toEqual([
      // A JSON answer is kept as its own text (trimmed), so a big integer survives.
      { node_id: 'json', protocol: 'http', status: 200, responseJson: '{"n": 12345678901234567890}' },
      { node_id: 'text', protocol: 'http', status: 200, response: 'plain words' },
      { node_id: 'says-json', protocol: 'http', status: 200, response: 'not json at all' },
      { node_id: 'broken', protocol: 'http', status: 500, responseJson: '{"error":"disk full"}' },
      { node_id: 'gone', protocol: 'http', status: 502, kind: 'unreachable', error: 'cannot reach gone' },
      { node_id: 'mute', protocol: 'http', status: 504, kind: 'timeout', error: 'timed out waiting for the client' },
    ])
  })

  test('a 5xx or a failure counts against its client, an answer (4xx included) for it', async () => {
    const http = new FakeTransport({ ok: answers(200, '1'), refused: answers(404, '2'), broken: answers(503, '3'), gone: failsWith('disconnected') })
    const core = taskCore({ http })
    const clients = ['ok', 'refused', 'broken', 'gone'].map((node) => core.join(node, 'usa'))
    await core.broadcaster.broadcast('usa', '1', 't-1')
    expect(
      clients.map(({ nodeId, successes, failures, consecutiveFailures, inFlight }) => ({ nodeId, successes, failures, consecutiveFailures, inFlight })),
    ).toEqual([
      { nodeId: 'ok', successes: 1, failures: 0, consecutiveFailures: 0, inFlight: 0 },
      { nodeId: 'refused', successes: 1, failures: 0, consecutiveFailures: 0, inFlight: 0 },
      { nodeId: 'broken', successes: 0, failures: 1, consecutiveFailures: 1, inFlight: 0 },
      { nodeId: 'gone', successes: 0, failures: 1, consecutiveFailures: 1, inFlight: 0 },
    ])
  })

  test("an answer too large is that client's 502, not held against it", async () => {
    const core = taskCore({ http: new FakeTransport({ big: failsWith('too_large', 'too big') }) })
    const big = core.join('big', 'usa')
    expect(delivered(await core.broadcaster.broadcast('usa', '1', 't-1'))).toEqual([
      { node_id: 'big', protocol: 'http', status: 502, kind: 'too_large', error: 'too big' },
    ])
    expect(big.failures).toBe(0)
  })

  test('onFinished: 200 when any client answered, 502 when none did, with the number of targets as attempts', async () => {
    const mixed = taskCore({ http: new FakeTransport({ a: answers(200, '1'), b: answers(500, '2') }) })
    mixed.join('a', 'usa')
    mixed.join('b', 'usa')
    await mixed.broadcaster.broadcast('usa', '1', 't-1')
    expect(mixed.finished).toMatchObject([{ task_id: 't-1', region: 'usa', mode: 'broadcast', node_id: null, status: 200, outcome: 'ok', attempts: 2 }])

    const none = taskCore({ http: new FakeTransport(failsWith('unreachable')) })
    none.join('a', 'usa')
    await none.broadcaster.broadcast('usa', '1', 't-2')
    expect(none.finished).toMatchObject([{ status: 502, outcome: 'failed', attempts: 1 }])
    expect(none.load.inFlight).toBe(0)
    expect(none.deadlines.size).toBe(0)
  })

  test('a transport that throws something other than an AttemptError fails the broadcast, which still counts: recorded as failed with its 500, its trace sent', async () => {
    const core = taskCore({ http: new FakeTransport({ a: answers(200, '1'), b: () => settle().then(() => Promise.reject(new TypeError('oops'))) }) })
    const clients = ['a', 'b'].map((node) => core.join(node, 'usa'))
    const { spans, trace } = recordedTrace(core.clock)
    await expect(core.broadcaster.broadcast('usa', '1', 't-1', undefined, trace)).rejects.toThrow('oops')
    await settle()
    expect(core.finished).toHaveLength(1)
    // a answered before b's send failed: the record says so.
    expect(core.finished[0]).toMatchObject({ task_id: 't-1', mode: 'broadcast', node_id: null, status: 500, outcome: 'failed', attempts: 2, answered: 1 })
    expect(core.finished[0]!.trace_id).toBe(trace.traceId)
    expect(spans.map((span) => [span.name, span.failed, span.attributes['http.response.status_code']])).toEqual([
      ['moonlight.task', 'failed', 500],
      ['moonlight.broadcast', 'internal', 500],
    ])
    for (const client of clients) expect(client.inFlight).toBe(0)
    expect(core.load.inFlight).toBe(0)
    expect(core.deadlines.size).toBe(0)
  })

  test('clients cut off by the stop answer 503, not held against them', async () => {
    const core = taskCore({ http: new FakeTransport({ quick: answers(200, '1'), slow: hangs() }) })
    core.join('quick', 'usa')
    const slow = core.join('slow', 'usa')
    const pending = core.broadcaster.broadcast('usa', '1', 't-1')
    core.load.closing = true
    core.deadlines.expireAll()
    expect(delivered(await pending)).toEqual([
      { node_id: 'quick', protocol: 'http', status: 200, responseJson: '1' },
      { node_id: 'slow', protocol: 'http', status: 503, error: 'the server shut down before the client answered' },
    ])
    expect(slow.failures).toBe(0)
  })

  test('the reply is built as one string, byte for byte what JSON.stringify of each part gives, a JSON answer spliced in as its own text', () => {
    const parts: BroadcastPart[] = [
      { node_id: 'json', protocol: 'ws', status: 200, responseJson: '{"n": 12345678901234567890}' },
      { node_id: 'text "quoted"', protocol: 'http', status: 200, response: 'plain\nwords' },
      { node_id: 'gone', protocol: 'http', status: 502, kind: 'unreachable', error: 'cannot reach "gone"' },
      { node_id: 'stopped', protocol: 'ws', status: 503, error: 'the server shut down before the client answered' },
      { node_id: 'hidden', protocol: 'http', status: 500 },
    ]
    const summary = { task_id: 't-1', region: 'usa', targets: parts.length, answered: 3 }
    // The form it replaced: each part serialized, its JSON answer appended as the last member.
    const expected = `${JSON.stringify(summary).slice(0, -1)},"results":[${parts
      .map(({ responseJson, ...rest }) =>
        responseJson === undefined ? JSON.stringify(rest) : `${JSON.stringify(rest).slice(0, -1)},"response":${responseJson}}`,
      )
      .join(',')}]}`
    expect(broadcastJson(summary, parts)).toBe(expected)
    expect(JSON.parse(broadcastJson(summary, [])).results).toEqual([])
  })
})
