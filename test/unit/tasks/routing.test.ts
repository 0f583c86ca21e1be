import { describe, expect, test } from 'bun:test'
import { SEED_HIERARCHY } from '../../../src/config/config.ts'
import { MoonlightError } from '../../../src/errors.ts'
import { Regions } from '../../../src/fleet/regions.ts'
import { outcomeResponse } from '../../../src/http/task-outcome.ts'
import type { Outcome } from '../../../src/tasks/outcome.ts'
import { DEFAULT_ROUTING, scopeBoundary, type TaskRouting, taskRouting } from '../../../src/tasks/routing.ts'
import { MemoryTaskStore } from '../../../src/tasks/stored/store.ts'
import { RETRY_CLASS } from '../../../src/transports/types.ts'
import type { RetryOn } from '../../../src/wire/errors.ts'
import { answers, FakeTransport, failsWith, hangs, type Reply, STORE_LIMITS, TEST_POLICY, taskCore } from '../../support/fake-transport.ts'

function expectKind<Kind extends Outcome['kind']>(outcome: Outcome, kind: Kind): Extract<Outcome, { kind: Kind }> {
  expect({ kind: outcome.kind, outcome }).toMatchObject({ kind })
  return outcome as Extract<Outcome, { kind: Kind }>
}

const routing = (extra: Partial<TaskRouting>): TaskRouting => ({ ...DEFAULT_ROUTING, ...extra })
const CONFIG = { routing: { fallback: 'parent' as const } }

describe('a task routing from its fields', () => {
  test('no fields: the original behaviour', () => {
    expect(taskRouting({}, CONFIG)).toEqual(DEFAULT_ROUTING)
  })

  test('fallback comes from the config unless the task gives one', () => {
    expect(taskRouting({}, { routing: { fallback: 'none' } }).fallback).toBe('none')
    expect(taskRouting({ fallback: 'parent' }, { routing: { fallback: 'none' } }).fallback).toBe('parent')
  })

  test('a named node is not retried unless the task says so', () => {
    expect(taskRouting({ node_id: 'n' }, CONFIG).retry).toBe(false)
    expect(taskRouting({ node_id: 'n', retry: true }, CONFIG).retry).toBe(true)
    expect(taskRouting({ retry: false }, CONFIG).retry).toBe(false)
  })
})

describe('dispatcher with a task routing', () => {
  test('retries stay at the level where the first attempt found candidates while an untried client is left there', async () => {
    const http = new FakeTransport({ e1: answers(500, 'e1'), e2: answers(500, 'e2'), us: answers(200, 'us') })
    const core = taskCore({ http, settings: { retryCount: 3 }, policy: { ...TEST_POLICY, maxEjectedPercent: 0 } })
    core.join('e1', 'eu-west-1')
    core.join('e2', 'eu-west-1')
    core.join('us', 'us-east-1')
    const outcome = expectKind(await core.dispatcher.dispatch('eu-west-1', '1', 't'), 'answered')
    // Both eu-west-1 clients first; only then the climb (fallback "parent") to global.
    expect(http.sentTo).toEqual(['e1', 'e2', 'us'])
    expect(outcome.client.nodeId).toBe('us')
  })

  test('fallback "none": retries never leave the region, and the task ends all_failed listing only its attempts', async () => {
    const http = new FakeTransport({ eu: answers(500, 'boom'), us: answers(200, 'us') })
    const core = taskCore({ http, settings: { retryCount: 2 }, policy: { ...TEST_POLICY, maxEjectedPercent: 0 } })
    core.join('eu', 'eu-west-1')
    core.join('us', 'us-east-1')
    const outcome = expectKind(await core.dispatcher.dispatch('eu-west-1', '1', 't', routing({ fallback: 'none' })), 'all_failed')
    expect(http.sentTo).toEqual(['eu', 'eu', 'eu'])
    expect(outcome.failedAttempts.map((attempt) => attempt.node_id)).toEqual(['eu', 'eu', 'eu'])
  })

  test('fallback "none" with nobody in the region: no_client, saying so, though other regions have clients', async () => {
    const core = taskCore({ http: new FakeTransport(answers(200, 'x')) })
    core.join('us', 'us-east-1')
    expect(await core.dispatcher.dispatch('eu-west-1', '1', 't', routing({ fallback: 'none' }))).toEqual({
      kind: 'no_client',
      region: 'eu-west-1',
      fallback: 'none',
    })
    // Under the region still counts: a task for europe reaches eu-west-1.
    core.join('eu', 'eu-west-1')
    expectKind(await core.dispatcher.dispatch('europe', '1', 't', routing({ fallback: 'none' })), 'answered')
  })

  test('retry false: one attempt, however many clients and retries there are', async () => {
    const http = new FakeTransport({ a: answers(500, 'a'), b: answers(200, 'b') })
    const core = taskCore({ http })
    core.join('a', 'usa')
    core.join('b', 'usa')
    expectKind(await core.dispatcher.dispatch('usa', '1', 't', routing({ retry: false })), 'all_failed')
    expect(http.sentTo).toEqual(['a'])
  })

  test("a client's own retry: false on a 5xx stops the retries", async () => {
    const http = new FakeTransport({
      a: async () => ({ status: 503, headers: {}, body: 'half done', retry: false }),
      b: answers(200, 'b'),
    })
    const core = taskCore({ http })
    core.join('a', 'usa')
    core.join('b', 'usa')
    const outcome = expectKind(await core.dispatcher.dispatch('usa', '1', 't'), 'all_failed')
    expect(http.sentTo).toEqual(['a'])
    expect(outcome.failedAttempts[0]).toMatchObject({ node_id: 'a', status: 503, reason: 'answered 503, not to be retried' })
  })

  test('a keyed task goes to the same client every time, and its retry to the next in the key’s order', async () => {
    const http = new FakeTransport(answers(200, 'ok'))
    const core = taskCore({ http })
    for (const id of ['a', 'b', 'c', 'd']) core.join(id, 'usa')
    for (let i = 0; i < 8; i++) await core.dispatcher.dispatch('usa', '1', `t-${i}`, routing({ key: 'user-42' }))
    const owner = http.sentTo[0]!
    expect(new Set(http.sentTo)).toEqual(new Set([owner]))
    // The owner fails: the retry goes where the key would go without it.
    const failing = new FakeTransport((task) => (task.nodeId === owner ? answers(500, 'x')(task) : answers(200, 'ok')(task)))
    const again = taskCore({ http: failing })
    for (const id of ['a', 'b', 'c', 'd']) again.join(id, 'usa')
    const without = taskCore({ http: new FakeTransport(answers(200, 'ok')) })
    for (const id of ['a', 'b', 'c', 'd'].filter((id) => id !== owner)) without.join(id, 'usa')
    const next = expectKind(await without.dispatcher.dispatch('usa', '1', 't', routing({ key: 'user-42' })), 'answered').client.nodeId
    expectKind(await again.dispatcher.dispatch('usa', '1', 't', routing({ key: 'user-42' })), 'answered')
    expect(failing.sentTo).toEqual([owner, next])
  })

  test('node_id: that client only; unknown is unknown_node, ejected or draining is node_unavailable', async () => {
    const http = new FakeTransport(answers(200, 'ok'))
    const core = taskCore({ http, policy: { ...TEST_POLICY, failuresToEject: 1, maxEjectedPercent: 100 } })
    core.join('a', 'usa')
    const b = core.join('b', 'usa')
    for (let i = 0; i < 3; i++) expectKind(await core.dispatcher.dispatch('global', '1', 't', routing({ nodeId: 'b', retry: false })), 'answered')
    expect(http.sentTo).toEqual(['b', 'b', 'b'])
    expect(await core.dispatcher.dispatch('global', '1', 't', routing({ nodeId: 'nobody' }))).toEqual({
      kind: 'unknown_node',
      region: 'global',
      nodeId: 'nobody',
    })
    // Given with a region, the node must be in it.
    expectKind(await core.dispatcher.dispatch('europe', '1', 't', routing({ nodeId: 'b' })), 'unknown_node')
    core.registry.setWeight('b', 0)
    expect(await core.dispatcher.dispatch('global', '1', 't', routing({ nodeId: 'b' }))).toMatchObject({ kind: 'node_unavailable', why: 'draining' })
    core.registry.setWeight('b', 1)
    core.registry.recordFailure(b, core.clock.now())
    expect(await core.dispatcher.dispatch('global', '1', 't', routing({ nodeId: 'b' }))).toMatchObject({ kind: 'node_unavailable', why: 'ejected' })
    expect(core.finished.at(-1)).toMatchObject({ status: 503, outcome: 'no_client' })
  })

  test('node_id with retry true retries on that client, never another', async () => {
    const http = new FakeTransport({ a: answers(200, 'a'), b: answers(500, 'b') })
    const core = taskCore({ http, settings: { retryCount: 2 } })
    core.join('a', 'usa')
    core.join('b', 'usa')
    expectKind(await core.dispatcher.dispatch('global', '1', 't', routing({ nodeId: 'b', retry: true })), 'all_failed')
    expect(http.sentTo).toEqual(['b', 'b', 'b'])
  })

  test("a task's timeout shortens task_timeout, and can never lengthen it", async () => {
    const core = taskCore({ http: new FakeTransport(hangs()), settings: { taskTimeoutMs: 10_000 } })
    core.join('a', 'usa')
    const short = core.dispatcher.dispatch('usa', '1', 't', routing({ timeoutMs: 2000 }))
    core.clock.advance(2000)
    expect(expectKind(await short, 'timed_out')).toMatchObject({ timeoutMs: 2000, ownTimeout: true })
    const long = core.dispatcher.dispatch('usa', '1', 't', routing({ timeoutMs: 60_000 }))
    core.clock.advance(10_000)
    const outcome = expectKind(await long, 'timed_out')
    expect(outcome.timeoutMs).toBe(10_000)
    expect(outcome.ownTimeout).toBeUndefined()
  })
})

describe('retry_on: which attempt failures a task may be retried after', () => {
  test('each attempt failure has its class: never reached, lost after sending, a 5xx; timeouts, too-large answers and server bugs none', () => {
    expect(RETRY_CLASS).toEqual({
      unreachable: 'unreachable',
      dropped: 'unreachable',
      refused: 'unreachable',
      disconnected: 'lost',
      invalid_answer: 'lost',
      status: 'status',
      timeout: undefined,
      too_large: undefined,
      internal: undefined,
    })
  })

  test('the config gives the default; a task may narrow it and is refused (400) if it widens it', () => {
    expect(taskRouting({}, CONFIG).retryOn).toBeUndefined()
    expect(taskRouting({}, { routing: { fallback: 'parent', retry_on: ['unreachable', 'lost', 'status'] } }).retryOn).toBeUndefined()
    expect(taskRouting({ retry_on: ['unreachable'] }, CONFIG).retryOn).toEqual(['unreachable'])
    expect(taskRouting({}, { routing: { fallback: 'parent', retry_on: ['unreachable', 'status'] } }).retryOn).toEqual(['unreachable', 'status'])
    const config = { routing: { fallback: 'parent' as const, retry_on: ['unreachable' as const] } }
    expect(taskRouting({ retry_on: [] }, config).retryOn).toEqual([])
    let refused: unknown
    try {
      taskRouting({ retry_on: ['unreachable', 'lost'] }, config)
    } catch (error) {
      refused = error
    }
    expect(refused).toBeInstanceOf(MoonlightError)
    expect((refused as MoonlightError).toJSON()).toEqual({
      error: 'retry_on may only narrow the server\'s routing.retry_on (["unreachable"]): "lost" is not in it',
      code: 'invalid_body',
      issues: [{ path: 'retry_on', message: '"lost" is not in the server\'s routing.retry_on' }],
    })
    expect((refused as MoonlightError).status).toBe(400)
  })

  test('a failure in a class the task leaves out ends it after that attempt, naming the class; one in a class it keeps is retried', async () => {
    const cases: { failure: Reply; kept: RetryOn[]; left: RetryOn }[] = [
      { failure: failsWith('unreachable'), kept: ['lost', 'status'], left: 'unreachable' },
      { failure: failsWith('dropped'), kept: ['lost', 'status'], left: 'unreachable' },
      { failure: failsWith('refused'), kept: ['lost', 'status'], left: 'unreachable' },
      { failure: failsWith('disconnected'), kept: ['unreachable', 'status'], left: 'lost' },
      { failure: failsWith('invalid_answer'), kept: ['unreachable', 'status'], left: 'lost' },
      { failure: answers(503, 'busy'), kept: ['unreachable', 'lost'], left: 'status' },
    ]
    for (const { failure, kept, left } of cases) {
      const stopped = new FakeTransport({ a: failure, b: answers(200, 'b') })
      const core = taskCore({ http: stopped })
      core.join('a', 'usa')
      core.join('b', 'usa')
      const outcome = expectKind(await core.dispatcher.dispatch('usa', '1', 't', routing({ retryOn: kept })), 'all_failed')
      expect({ left, sentTo: stopped.sentTo, notRetried: outcome.notRetried }).toEqual({ left, sentTo: ['a'], notRetried: left })
      const retried = new FakeTransport({ a: failure, b: answers(200, 'b') })
      const again = taskCore({ http: retried })
      again.join('a', 'usa')
      again.join('b', 'usa')
      expectKind(await again.dispatcher.dispatch('usa', '1', 't', routing({ retryOn: [left] })), 'answered')
      expect({ left, sentTo: retried.sentTo }).toEqual({ left, sentTo: ['a', 'b'] })
    }
  })

  test('a task not retried after a lost attempt answers 502 naming "lost" and that it ran at most once', async () => {
    const core = taskCore({ http: new FakeTransport({ a: failsWith('disconnected'), b: answers(200, 'b') }) })
    core.join('a', 'usa')
    core.join('b', 'usa')
    const outcome = await core.dispatcher.dispatch('usa', '1', 't', routing({ retryOn: ['unreachable'] }))
    const response = outcomeResponse(outcome, 't')
    expect(response.status).toBe(502)
    expect(await response.json()).toMatchObject({
      code: 'all_attempts_failed',
      not_retried: 'lost',
      error: expect.stringContaining('ran at most once'),
      attempts: [{ node_id: 'a', kind: 'disconnected' }],
    })
  })

  test('a timeout ends the task whatever retry_on says', async () => {
    const http = new FakeTransport({ a: hangs(), b: answers(200, 'b') })
    const core = taskCore({ http, settings: { taskTimeoutMs: 1000 } })
    core.join('a', 'usa')
    core.join('b', 'usa')
    const pending = core.dispatcher.dispatch('usa', '1', 't', routing({ retryOn: ['unreachable', 'lost', 'status'] }))
    core.clock.advance(1000)
    expectKind(await pending, 'timed_out')
    expect(http.sentTo).toEqual(['a'])
  })
})

describe("a token's region boundary", () => {
  const regions = new Regions(SEED_HIERARCHY)

  test('is the highest of the token’s regions on the way up from the task’s region; none without regions', () => {
    expect(scopeBoundary(regions, 'us-east-1', undefined)).toBeUndefined()
    expect(scopeBoundary(regions, 'us-east-1', ['us-east-1'])).toBe('us-east-1')
    expect(scopeBoundary(regions, 'us-east-1', ['eu-west-1', 'us-east-1', 'usa'])).toBe('usa')
    expect(scopeBoundary(regions, 'usa', ['usa'])).toBe('usa')
  })

  test('no task crosses it: no_client naming it, fallback "parent" or not, plain or keyed, though clients wait outside', async () => {
    const http = new FakeTransport(answers(200, 'ok'))
    const core = taskCore({ http })
    core.join('eu', 'eu-west-1')
    core.join('west', 'us-west-1')
    for (const extra of [{}, { key: 'user-1' }, { fallback: 'none' as const }]) {
      expect(await core.dispatcher.dispatch('us-east-1', '1', 't', routing({ boundary: 'us-east-1', ...extra }))).toMatchObject({
        kind: 'no_client',
        region: 'us-east-1',
        boundary: 'us-east-1',
      })
    }
    expect(http.sentTo).toEqual([])
    // Up to the boundary it climbs as before: usa holds us-west-1.
    expect(expectKind(await core.dispatcher.dispatch('us-east-1', '1', 't', routing({ boundary: 'usa' })), 'answered').client.nodeId).toBe('west')
    // A named node outside it is unknown, as if it were not there.
    expectKind(await core.dispatcher.dispatch('global', '1', 't', routing({ boundary: 'us-east-1', nodeId: 'eu' })), 'unknown_node')
    expect(http.sentTo).toEqual(['west'])
  })

  test('retries stay inside it: a client inside that fails is not followed by one outside', async () => {
    const http = new FakeTransport({ east: answers(500, 'boom'), eu: answers(200, 'eu') })
    const core = taskCore({ http, settings: { retryCount: 3 }, policy: { ...TEST_POLICY, maxEjectedPercent: 0 } })
    core.join('east', 'us-east-1')
    core.join('eu', 'eu-west-1')
    expectKind(await core.dispatcher.dispatch('us-east-1', '1', 't', routing({ boundary: 'us-east-1' })), 'all_failed')
    expect(http.sentTo).toEqual(['east', 'east', 'east', 'east'])
  })

  test('its 503 says the token is limited to regions', async () => {
    const response = outcomeResponse({ kind: 'no_client', region: 'us-east-1', boundary: 'us-east-1' }, 't')
    expect(response.status).toBe(503)
    expect(await response.json()).toEqual({
      code: 'no_client',
      region: 'us-east-1',
      boundary: 'us-east-1',
      error:
        'no healthy client in region "us-east-1" or under it; this token is limited to regions, and its tasks are never sent outside them (boundary "us-east-1")',
    })
  })
})

describe('retry_on and a stored task taken over from an instance that had started it', () => {
  const keyed = (retryOn?: RetryOn[]) => ({
    task: {
      task_id: 't1',
      mode: 'single' as const,
      region: 'usa',
      payload: '1',
      routing: routing(retryOn ? { retryOn } : {}),
      owner: '',
      disclosure: 'details' as const,
      submitted_at_ms: 0,
    },
    idempotency: { key: 'k1', bodyHash: 'h1' },
  })

  test('without "lost" it is not run again: 502 naming "lost", nothing sent; with it, it runs here', async () => {
    const cases: Array<[RetryOn[] | undefined, { status: number; sentTo: string[] }]> = [
      [['unreachable'], { status: 502, sentTo: [] }],
      [undefined, { status: 200, sentTo: ['a'] }],
    ]
    for (const [retryOn, expected] of cases) {
      const http = new FakeTransport(answers(200, '"ok"'))
      const core = taskCore({ http })
      core.join('a', 'usa')
      const store = new MemoryTaskStore(() => STORE_LIMITS)
      const tasks = core.storedTasks(store)
      const { task } = await tasks.submit(keyed(retryOn))
      // Another instance started it and died: the task is running, claimed by it.
      expect(await store.start(task.task_id, 'dead-instance', false)).toBe(true)
      const running = await tasks.get(task.task_id)
      const response = (await tasks.runHere(running!, true))!
      expect({ retryOn, status: response.status, sentTo: http.sentTo }).toEqual({ retryOn, ...expected })
      if (response.status === 502) expect(await response.json()).toMatchObject({ code: 'all_attempts_failed', not_retried: 'lost', attempts: [] })
      // Run or not, the task counts (totals, /metrics, the dashboard): one record each.
      expect(core.finished.map(({ task_id, status, outcome, attempts }) => ({ task_id, status, outcome, attempts }))).toEqual([
        { task_id: 't1', status: expected.status, outcome: expected.status === 200 ? 'ok' : 'failed', attempts: expected.sentTo.length },
      ])
    }
  })
})
