/** The per-task routing controls of POST /task/request, and slow start, with a real server and real agents. */
import { describe, expect, test } from 'bun:test'
import { postTask, startHttpAgent, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()

async function clients(url: string): Promise<Array<Record<string, any>>> {
  const response = await fetch(`${url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
  return ((await response.json()) as { clients: Array<Record<string, any>> }).clients
}

const nodesOf = (attempts: Array<{ node_id: string }>) => attempts.map((attempt) => attempt.node_id)

/** The issue's story: a failing eu-west-1 handler, and agents elsewhere that would answer anything. */
async function euStory(overrides: Parameters<typeof server>[0] = {}) {
  const mls = server({ retry_count: 3, health: { max_ejected_percent: 0 }, ...overrides })
  const eu = await startHttpAgent(mls.url, {
    nodeId: 'eu-worker-1',
    region: 'eu-west-1',
    work: () => Response.json({ error: 'handler threw' }, { status: 500 }),
  })
  defer(eu.stop)
  const east = await startWsAgent(mls.wsUrl, { nodeId: 'us-east-worker', region: 'us-east-1' })
  defer(east.close)
  const cat = await startHttpAgent(mls.url, { nodeId: 'us-west-cat', region: 'us-west-1' })
  defer(cat.stop)
  return { mls, eu, east, cat }
}

describe('fallback', () => {
  test('"none": a task for eu-west-1 whose handler fails is answered 502 listing only the eu-west-1 attempts, never by another region', async () => {
    const { mls, eu, east, cat } = await euStory()
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: { job: 1 }, fallback: 'none' })
    expect(result.status).toBe(502)
    const body = result.json()
    expect(body.code).toBe('all_attempts_failed')
    expect(nodesOf(body.attempts)).toEqual(['eu-worker-1', 'eu-worker-1', 'eu-worker-1', 'eu-worker-1'])
    expect(body.attempts[0]).toMatchObject({ status: 500, body: '{"error":"handler threw"}' })
    expect(eu.received).toHaveLength(4)
    expect(east.received).toEqual([])
    expect(cat.received).toEqual([])
  })

  test('"parent" (the default): the same task climbs once eu-west-1 has no untried client, as before', async () => {
    const { mls, eu } = await euStory()
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: { job: 1 } })
    expect(result.status).toBe(200)
    expect(['us-east-worker', 'us-west-cat']).toContain(result.headers.get('x-moonlight-node')!)
    // The first attempt found its candidate in eu-west-1 and climbed only once none was left untried there.
    expect(eu.received).toHaveLength(1)
  })

  test('routing.fallback "none" in the config is the default a task can override', async () => {
    const { mls, east, cat } = await euStory({ routing: { fallback: 'none' } })
    expect((await postTask(mls.url, { region: 'eu-west-1', payload: 1 })).status).toBe(502)
    expect(east.received.length + cat.received.length).toBe(0)
    expect((await postTask(mls.url, { region: 'eu-west-1', payload: 1, fallback: 'parent' })).status).toBe(200)
  })

  test('"none" with nobody at or under the region: 503 no_client, though other regions have agents', async () => {
    const mls = server()
    const east = await startWsAgent(mls.wsUrl, { nodeId: 'east', region: 'us-east-1' })
    defer(east.close)
    const result = await postTask(mls.url, { region: 'europe', payload: 1, fallback: 'none' })
    expect(result.status).toBe(503)
    expect(result.json()).toEqual({ error: 'no healthy client in region "europe" or under it (fallback "none")', code: 'no_client', region: 'europe' })
    // Under the region is inside it: a task for usa reaches us-east-1.
    expect((await postTask(mls.url, { region: 'usa', payload: 1, fallback: 'none' })).headers.get('x-moonlight-node')).toBe('east')
  })
})

describe('key: sticky routing', () => {
  test('tasks with the same key reach the same agent; other keys spread; a retry goes to the next in the key’s order', async () => {
    const mls = server()
    const failing = new Set<string>()
    const agents = await Promise.all(
      ['a', 'b', 'c', 'd'].map((nodeId) =>
        startHttpAgent(mls.url, {
          nodeId,
          region: 'us-east-1',
          work: () => (failing.has(nodeId) ? Response.json({ error: 'down' }, { status: 500 }) : Response.json({ node: nodeId })),
        }),
      ),
    )
    for (const agent of agents) defer(agent.stop)
    const nodeFor = async (key: string) => (await postTask(mls.url, { region: 'usa', payload: 1, key })).headers.get('x-moonlight-node')!
    const owner = await nodeFor('user-42')
    for (let i = 0; i < 9; i++) expect(await nodeFor('user-42')).toBe(owner)
    const spread = new Set<string>()
    for (let i = 0; i < 40; i++) spread.add(await nodeFor(`user-${i}`))
    expect(spread.size).toBeGreaterThan(2)
    // The owner fails: the retry lands on one client, the same every time (the key's second choice).
    failing.add(owner)
    const retried = await postTask(mls.url, { region: 'usa', payload: 1, key: 'user-42' })
    expect(retried.status).toBe(200)
    expect(retried.headers.get('x-moonlight-attempts')).toBe('2')
    const second = retried.headers.get('x-moonlight-node')!
    expect(second).not.toBe(owner)
    expect((await postTask(mls.url, { region: 'usa', payload: 1, key: 'user-42' })).headers.get('x-moonlight-node')).toBe(second)
  })

  test('when the owner leaves, only its keys move', async () => {
    const mls = server()
    const agents = await Promise.all(['a', 'b', 'c'].map((nodeId) => startWsAgent(mls.wsUrl, { nodeId, region: 'usa' })))
    for (const agent of agents) defer(agent.close)
    const nodeFor = async (key: string) => (await postTask(mls.url, { region: 'usa', payload: 1, key })).headers.get('x-moonlight-node')!
    const keys = Array.from({ length: 30 }, (_, i) => `k-${i}`)
    const before = new Map<string, string>()
    for (const key of keys) before.set(key, await nodeFor(key))
    agents[0]!.close()
    await waitFor(async () => (await clients(mls.url)).length === 2, 'agent a to leave')
    for (const key of keys) {
      const now = await nodeFor(key)
      if (before.get(key) === 'a') expect(now).not.toBe('a')
      else expect(now).toBe(before.get(key)!)
    }
  })
})

describe('node_id: one named client', () => {
  test('reaches exactly that client; 404 for an unknown one; 503 while it drains', async () => {
    const mls = server()
    const one = await startHttpAgent(mls.url, { nodeId: 'eu-worker-1', region: 'eu-west-1' })
    defer(one.stop)
    const two = await startWsAgent(mls.wsUrl, { nodeId: 'eu-worker-2', region: 'eu-west-1' })
    defer(two.close)
    for (let i = 0; i < 4; i++) expect((await postTask(mls.url, { payload: i, node_id: 'eu-worker-2' })).headers.get('x-moonlight-node')).toBe('eu-worker-2')
    expect(one.received).toEqual([])

    const unknown = await postTask(mls.url, { payload: 1, node_id: 'eu-worker-9' })
    expect(unknown.status).toBe(404)
    expect(unknown.json()).toMatchObject({ code: 'unknown_node', node_id: 'eu-worker-9' })
    // With a region, the node must be in it.
    expect((await postTask(mls.url, { region: 'usa', payload: 1, node_id: 'eu-worker-1' })).json().code).toBe('unknown_node')

    expect((await one.heartbeat({ weight: 0 })).status).toBe(200)
    const draining = await postTask(mls.url, { payload: 1, node_id: 'eu-worker-1' })
    expect(draining.status).toBe(503)
    expect(draining.json()).toEqual({
      error: 'client "eu-worker-1" cannot take tasks now: draining',
      code: 'node_unavailable',
      node_id: 'eu-worker-1',
      reason: 'draining',
    })
  })

  test('503 while it is ejected', async () => {
    const mls = server({ health: { failures_to_eject: 1, max_ejected_percent: 100 } })
    const bad = await startHttpAgent(mls.url, { nodeId: 'bad', region: 'usa', work: () => new Response('x', { status: 500 }) })
    defer(bad.stop)
    expect((await postTask(mls.url, { payload: 1, node_id: 'bad' })).status).toBe(502)
    const ejected = await postTask(mls.url, { payload: 1, node_id: 'bad' })
    expect(ejected.status).toBe(503)
    expect(ejected.json()).toMatchObject({ code: 'node_unavailable', reason: 'ejected' })
  })

  test('a 5xx is not retried by default; with "retry": true it is retried on that client, never another', async () => {
    const mls = server({ retry_count: 2, health: { max_ejected_percent: 0 } })
    const flaky = await startHttpAgent(mls.url, { nodeId: 'flaky', region: 'usa', work: () => new Response('busy', { status: 503 }) })
    defer(flaky.stop)
    const other = await startHttpAgent(mls.url, { nodeId: 'other', region: 'usa' })
    defer(other.stop)
    const once = await postTask(mls.url, { payload: 1, node_id: 'flaky' })
    expect(once.status).toBe(502)
    expect(nodesOf(once.json().attempts)).toEqual(['flaky'])
    const again = await postTask(mls.url, { payload: 1, node_id: 'flaky', retry: true })
    expect(nodesOf(again.json().attempts)).toEqual(['flaky', 'flaky', 'flaky'])
    expect(other.received).toEqual([])
  })

  test('a token limited to regions may not name a node outside them', async () => {
    const mls = server({
      tokens: [],
      access: [
        { token: TOKEN, roles: ['admin'] },
        { token: 'eu-only-token-1', roles: ['submit'], regions: ['europe'] },
      ],
    })
    const us = await startHttpAgent(mls.url, { nodeId: 'us-1', region: 'us-east-1' })
    defer(us.stop)
    const refused = await postTask(mls.url, { payload: 1, node_id: 'us-1' }, 'eu-only-token-1')
    expect(refused.status).toBe(403)
    expect(refused.json().code).toBe('forbidden')
    expect(us.received).toEqual([])
  })
})

describe('retry and timeout', () => {
  test('"retry": false: one attempt, though another client would have answered', async () => {
    const mls = server({ retry_count: 3 })
    const bad = await startHttpAgent(mls.url, { nodeId: 'bad', region: 'usa', weight: 1000, work: () => new Response('x', { status: 500 }) })
    defer(bad.stop)
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'usa', weight: 1 })
    defer(good.stop)
    const result = await postTask(mls.url, { region: 'usa', payload: 1, retry: false })
    expect(result.status).toBe(502)
    expect(nodesOf(result.json().attempts)).toEqual(['bad'])
    expect(good.received).toEqual([])
  })

  test('a WebSocket agent\'s "retry": false on a 5xx stops the retries', async () => {
    const mls = server({ retry_count: 3 })
    const half = await startWsAgent(mls.wsUrl, {
      nodeId: 'half',
      region: 'usa',
      weight: 1000,
      answer: () => ({ status: 500, response: { error: 'wrote half' }, retry: false }) as never,
    })
    defer(half.close)
    const good = await startWsAgent(mls.wsUrl, { nodeId: 'good', region: 'usa' })
    defer(good.close)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(502)
    expect(result.json().attempts).toEqual([
      { node_id: 'half', kind: 'status', reason: 'answered 500, not to be retried', status: 500, body: '{"error":"wrote half"}' },
    ])
    expect(good.received).toEqual([])
  })

  test('"timeout": S gives up sooner with 504; a longer one than task_timeout is cut to it', async () => {
    const mls = server({ task_timeout: 1.5 })
    const slow = await startHttpAgent(mls.url, {
      nodeId: 'slow',
      region: 'usa',
      work: async () => {
        await Bun.sleep(4000)
        return Response.json({ late: true })
      },
    })
    defer(slow.stop)
    let startedMs = Date.now()
    const short = await postTask(mls.url, { region: 'usa', payload: 1, timeout: 0.3 })
    expect(Date.now() - startedMs).toBeLessThan(1200)
    expect(short.status).toBe(504)
    expect(short.json()).toMatchObject({ code: 'timeout', error: "no answer within the task's timeout (0.3 s)" })
    startedMs = Date.now()
    const long = await postTask(mls.url, { region: 'usa', payload: 1, timeout: 60 })
    expect(Date.now() - startedMs).toBeLessThan(3500)
    expect(long.status).toBe(504)
    expect(long.json().error).toBe('no answer within task_timeout (1.5 s)')
  })

  test('a broadcast takes "timeout" too: the silent agent\'s part times out sooner, the others\' answers stand', async () => {
    const mls = server({ task_timeout: 10 })
    const talker = await startWsAgent(mls.wsUrl, { nodeId: 'talker', region: 'usa' })
    defer(talker.close)
    const mute = await startWsAgent(mls.wsUrl, { nodeId: 'mute', region: 'usa', answer: () => null })
    defer(mute.close)
    const startedMs = Date.now()
    const result = await postTask(mls.url, { region: 'usa', mode: 'broadcast', payload: 1, timeout: 0.3 })
    expect(Date.now() - startedMs).toBeLessThan(3000)
    expect(result.status).toBe(200)
    const parts = Object.fromEntries(result.json().results.map((part: { node_id: string; status: number }) => [part.node_id, part.status]))
    expect(parts).toEqual({ talker: 200, mute: 504 })
  })

  test('bad routing fields are 400 invalid_body naming the field; a broadcast takes no key or node_id', async () => {
    const mls = server()
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ fallback: 'up' }, 'fallback'],
      [{ timeout: 0 }, 'timeout'],
      [{ retry: 'no' }, 'retry'],
      [{ key: '' }, 'key'],
      [{ node_id: 'has space' }, 'node_id'],
      [{ mode: 'broadcast', key: 'k' }, 'key'],
      [{ mode: 'broadcast', node_id: 'n' }, 'node_id'],
    ]
    for (const [fields, path] of cases) {
      const result = await postTask(mls.url, { payload: 1, ...fields })
      expect({ fields, status: result.status, code: result.json().code }).toEqual({ fields, status: 400, code: 'invalid_body' })
      expect(result.json().issues.map((issue: { path: string }) => issue.path)).toContain(path)
    }
  })
})

describe('slow start', () => {
  test('a newcomer ramps from 10 % of its weight: /clients shows its effective weight while it ramps, and it gets few tasks', async () => {
    const mls = server({ health: { slow_start: 2 } })
    const warm = await startWsAgent(mls.wsUrl, { nodeId: 'warm', region: 'usa', weight: 10 })
    defer(warm.close)
    await waitFor(async () => (await clients(mls.url))[0]?.effective_weight === undefined, 'the warm agent to finish its ramp', 5000)
    const cold = await startWsAgent(mls.wsUrl, { nodeId: 'cold', region: 'usa', weight: 10 })
    defer(cold.close)
    const view = (await clients(mls.url)).find((client) => client.node_id === 'cold')!
    expect(view.weight).toBe(10)
    expect(view.effective_weight).toBeGreaterThanOrEqual(1)
    expect(view.effective_weight).toBeLessThan(4)
    for (let i = 0; i < 20; i++) await postTask(mls.url, { region: 'usa', payload: i })
    // At 10-25 % of its weight beside a warm equal it gets a few tasks in 20, not half.
    expect(cold.received.length).toBeGreaterThan(0)
    expect(cold.received.length).toBeLessThan(6)
    await waitFor(async () => (await clients(mls.url)).every((client) => client.effective_weight === undefined), 'the ramp to end', 5000)
    const warmBefore = warm.received.length
    for (let i = 0; i < 20; i++) await postTask(mls.url, { region: 'usa', payload: i })
    expect(warm.received.length - warmBefore).toBe(10)
  })

  test('without health.slow_start a newcomer has its whole weight at once (no effective_weight)', async () => {
    const mls = server()
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'n', region: 'usa', weight: 3 })
    defer(agent.close)
    expect((await clients(mls.url))[0]).not.toHaveProperty('effective_weight')
  })
})
