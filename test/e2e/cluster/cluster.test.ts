/**
 * Cluster mode end to end: several `moonlight serve` processes sharing one fleet through a real
 * redis-server (test/support/redis.ts), with real agents. instance_ttl is 1 s, so a dead instance is noticed
 * within a second or two.
 */
import { describe, expect, test } from 'bun:test'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { runCli } from '../../support/cli.ts'
import { clusterScope, getJson, type Instance } from '../../support/cluster.ts'
import {
  openWs,
  postTask,
  ROOT,
  startCli,
  startHttpAgent,
  startWsAgent,
  type TaskResult,
  TOKEN,
  testScope,
  type WsAgent,
  waitFor,
} from '../../support/helpers.ts'

const { defer } = testScope()
const { writeConfig, redisServer, spawn, instance, wsAgent } = clusterScope(defer)

interface ListedClient {
  node_id: string
  instance: string
  protocol: string
  weight: number
}

const clientsOf = async (at: Instance): Promise<ListedClient[]> => (await getJson(`${at.url}/clients`)).clients

/** node id → holding instance, as `at` lists them, sorted by node id. */
async function holders(at: Instance): Promise<Array<[string, string]>> {
  return (await clientsOf(at)).map((client): [string, string] => [client.node_id, client.instance]).sort(([a], [b]) => a.localeCompare(b))
}

async function waitForHolders(at: Instance, expected: Array<[string, string]>, what: string, timeoutMs = 5000): Promise<void> {
  const wanted = JSON.stringify([...expected].sort(([a], [b]) => a.localeCompare(b)))
  await waitFor(async () => JSON.stringify(await holders(at)) === wanted, `${what} (${at.id} lists ${wanted})`, timeoutMs)
}

/** Runs `count` tasks through `submit`, at most `concurrency` at once; results in submission order. */
async function runBounded(count: number, concurrency: number, submit: (i: number) => Promise<TaskResult>): Promise<TaskResult[]> {
  const results: TaskResult[] = new Array(count)
  let next = 0
  const worker = async () => {
    while (next < count) {
      const i = next++
      results[i] = await submit(i)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return results
}

describe('one fleet across instances', () => {
  test('a WebSocket agent held by B answers a task submitted to A: status, headers and body as-is, and X-Moonlight-Instance b', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    // A raw agent: its answer is written by hand, with an integer no double can hold.
    const raw = await openWs(b.wsUrl)
    defer(raw.close)
    const frames: string[] = []
    raw.socket.addEventListener('message', (event) => {
      const text = String(event.data)
      frames.push(text)
      const message = JSON.parse(text)
      if (message.type !== 'task') return
      raw.send(
        `{"type":"task_response","payload":{"task_id":${JSON.stringify(message.task_id)},"status":201,"headers":{"X-Trace":"trace-7f3a"},"response":{"big": 12345678901234567890, "ok": true}}}`,
      )
    })
    raw.send({ type: 'register', payload: { ip: '127.0.0.1', node_id: 'raw-b', token: TOKEN, region: 'us-east-1', port: 3000 } })
    expect((await raw.next()).type).toBe('registered')
    // Announced through Redis at once, not at the next refresh.
    await waitFor(async () => (await clientsOf(a)).some((client) => client.node_id === 'raw-b' && client.instance === 'b'), "raw-b listed on A as B's", 1500)

    const result = await postTask(a.url, '{"region": "usa", "payload": {"n": 98765432109876543210}}')
    expect(result.status).toBe(201)
    expect(result.text).toBe('{"big": 12345678901234567890, "ok": true}')
    expect(result.headers.get('content-type')).toBe('application/json')
    expect(result.headers.get('x-trace')).toBe('trace-7f3a')
    expect(result.headers.get('x-moonlight-node')).toBe('raw-b')
    expect(result.headers.get('x-moonlight-instance')).toBe('b')
    // The payload reached the agent as its own text too.
    expect(frames.find((frame) => frame.includes('"type":"task"'))).toContain('{"n": 98765432109876543210}')
    expect(await (await fetch(`${a.url}/metrics`)).text()).toContain('moonlight_cluster_relays_total 1')
    // Each instance's verdict: A's own (state) beside the holder's (holder_state); B's own client has no holder_state.
    expect((await getJson(`${a.url}/clients`)).clients.find((client: { node_id: string }) => client.node_id === 'raw-b')).toMatchObject({
      state: 'healthy',
      holder_state: 'healthy',
    })
    expect((await getJson(`${b.url}/clients`)).clients.find((client: { node_id: string }) => client.node_id === 'raw-b').holder_state).toBeUndefined()
  })

  test('a relayed 5xx with "retry": false is not retried: A answers 502 with the one attempt, its own agent untouched', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { retry_count: 3 })
    const b = await instance(redis.url, 'b')
    await wsAgent(b, {
      nodeId: 'half-b',
      region: 'usa',
      weight: 1000,
      answer: () => ({ status: 500, response: { error: 'wrote half' }, retry: false }) as never,
    })
    const good = await wsAgent(a, { nodeId: 'good-a', region: 'usa' })
    await waitFor(async () => (await clientsOf(a)).some((client) => client.node_id === 'half-b'), 'half-b listed on A', 1500)
    const result = await postTask(a.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(502)
    expect(result.json().attempts).toEqual([
      { node_id: 'half-b', kind: 'status', reason: 'answered 500, not to be retried', status: 500, body: '{"error":"wrote half"}' },
    ])
    expect(good.received).toEqual([])
  })

  test('an HTTP agent heartbeating to A is called by B directly', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    const agent = await startHttpAgent(a.url, { nodeId: 'http-a', region: 'eu-west-1' })
    defer(agent.stop)
    await waitForHolders(b, [['http-a', 'a']], "B sees A's HTTP agent")

    const result = await postTask(b.url, { region: 'europe', payload: { job: 'direct' } })
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ node: 'http-a', echo: { job: 'direct' } })
    expect(result.headers.get('x-moonlight-node')).toBe('http-a')
    // B called it itself: nothing went through A.
    expect(result.headers.get('x-moonlight-instance')).toBe('b')
    expect(agent.received).toEqual([{ job: 'direct' }])
    expect(await (await fetch(`${b.url}/metrics`)).text()).toContain('moonlight_cluster_relays_total 0')
    expect((await getJson(`${a.url}/status`)).tasks_total).toBe(0)
  })

  test('weights 3:1 hold cluster-wide: w3 on A, w1 on B, 1 000 tasks submitted alternately to A and B', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    await wsAgent(a, { nodeId: 'w3', region: 'us-west-1', weight: 3 })
    await wsAgent(b, { nodeId: 'w1', region: 'us-west-1', weight: 1 })
    for (const at of [a, b])
      await waitFor(
        async () =>
          (await clientsOf(at))
            .map((client) => `${client.node_id}:${client.weight}`)
            .sort()
            .join() === 'w1:1,w3:3',
        `${at.id} sees both`,
      )

    const results = await runBounded(1000, 16, (i) => postTask((i % 2 === 0 ? a : b).url, { region: 'usa', payload: i }))
    const byNode = new Map<string, number>()
    for (const result of results) {
      expect(result.status).toBe(200)
      const node = result.headers.get('x-moonlight-node') ?? '?'
      byNode.set(node, (byNode.get(node) ?? 0) + 1)
    }
    const share = (byNode.get('w3') ?? 0) / results.length
    console.log(
      `[cluster] weights 3:1 across A and B: w3 took ${(share * 100).toFixed(1)} %, w1 ${(((byNode.get('w1') ?? 0) / results.length) * 100).toFixed(1)} %`,
    )
    expect([...byNode.keys()].sort()).toEqual(['w1', 'w3'])
    expect(share).toBeGreaterThanOrEqual(0.7)
    expect(share).toBeLessThanOrEqual(0.8)
  })

  test('a broadcast from A reaches the agents of A, B and C, and the results are gathered at A', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    const c = await instance(redis.url, 'c')
    const onA = await wsAgent(a, { nodeId: 'on-a', region: 'us-east-1' })
    const onB = await wsAgent(b, { nodeId: 'on-b', region: 'us-west-1' })
    // C's agent is the real `moonlight agent`.
    const onC = startCli([
      'agent',
      '--server',
      c.url,
      '--token',
      TOKEN,
      '--node-id',
      'on-c',
      '--region',
      'usa',
      '--handler',
      join(ROOT, 'test/fixtures/agent-handler.ts'),
    ])
    defer(async () => {
      onC.kill('SIGKILL')
      await onC.exited
    })
    await onC.waitForOutput('registered as on-c')
    await waitForHolders(
      a,
      [
        ['on-a', 'a'],
        ['on-b', 'b'],
        ['on-c', 'c'],
      ],
      'A sees the three agents',
    )

    const result = await postTask(a.url, { region: 'usa', mode: 'broadcast', payload: { double: 21 } })
    expect(result.status).toBe(200)
    const body = result.json()
    expect(body).toMatchObject({ region: 'usa', targets: 3, answered: 3 })
    const byNode = Object.fromEntries(body.results.map((entry: { node_id: string }) => [entry.node_id, entry]))
    expect(byNode).toEqual({
      'on-a': { node_id: 'on-a', protocol: 'ws', status: 200, response: { node: 'on-a', echo: { double: 21 } } },
      'on-b': { node_id: 'on-b', protocol: 'ws', status: 200, response: { node: 'on-b', echo: { double: 21 } } },
      'on-c': { node_id: 'on-c', protocol: 'ws', status: 200, response: { doubled: 42 } },
    })
    expect(onA.received).toEqual([{ double: 21 }])
    expect(onB.received).toEqual([{ double: 21 }])
  })
})

describe('instances that stop', () => {
  test('kill -9 of B with 50 tasks relayed to its slow agents: every caller at A gets one answer, from an agent on A, long before task_timeout', async () => {
    const taskTimeoutS = 30
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: taskTimeoutS })
    const b = await instance(redis.url, 'b', { task_timeout: taskTimeoutS })
    // B's agents answer each task only after 20 s: by then their instance is long dead.
    const late: Array<ReturnType<typeof setTimeout>> = []
    defer(() => late.forEach(clearTimeout))
    const slowAgents: WsAgent[] = []
    for (const nodeId of ['slow-1', 'slow-2']) {
      const agent: WsAgent = await wsAgent(b, {
        nodeId,
        region: 'us-east-1',
        answer: (payload, taskId) => {
          late.push(setTimeout(() => agent.send({ type: 'task_response', payload: { task_id: taskId, response: { late: payload } } }), 20_000))
          return null
        },
      })
      slowAgents.push(agent)
    }
    await waitForHolders(
      a,
      [
        ['slow-1', 'b'],
        ['slow-2', 'b'],
      ],
      "A sees B's agents",
    )

    const startedAt = Date.now()
    const calls = Array.from({ length: 50 }, (_, i) =>
      postTask(a.url, { region: 'usa', payload: i }).then((result) => ({ i, result, elapsedMs: Date.now() - startedAt })),
    )
    for (const call of calls) call.catch(() => undefined)
    await waitFor(() => slowAgents.reduce((sum, agent) => sum + agent.received.length, 0) === 50, "the 50 tasks held by B's agents")
    // The agent that takes over, on A; then B dies without a word.
    const rescuer = await wsAgent(a, { nodeId: 'rescuer', region: 'us-east-1' })
    b.child.process.kill('SIGKILL')
    await b.child.exited

    const answered = await Promise.all(calls)
    for (const { i, result } of answered) {
      expect([result.status, result.headers.get('x-moonlight-node'), result.headers.get('x-moonlight-instance')]).toEqual([200, 'rescuer', 'a'])
      expect(result.json()).toEqual({ node: 'rescuer', echo: i })
    }
    // Each task reached the rescuer exactly once: none lost, none doubled.
    expect([...rescuer.received].sort((x, y) => Number(x) - Number(y))).toEqual(Array.from({ length: 50 }, (_, i) => i))
    const slowest = Math.max(...answered.map(({ elapsedMs }) => elapsedMs))
    console.log(`[cluster] kill -9 of B: the 50 callers at A were all answered within ${slowest} ms (task_timeout ${taskTimeoutS} s)`)
    expect(slowest).toBeLessThan((taskTimeoutS * 1000) / 2)
    await waitForHolders(a, [['rescuer', 'a']], "B's agents dropped from A")
  }, 30_000)

  test('a relayed task that outlives its caller is dropped: nothing stays waiting at the origin, the holder serves on', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 3 })
    const b = await instance(redis.url, 'b', { task_timeout: 3 })
    const late: Array<ReturnType<typeof setTimeout>> = []
    defer(() => late.forEach(clearTimeout))
    const slow: WsAgent = await wsAgent(b, {
      nodeId: 'slow',
      region: 'us-east-1',
      answer: (payload, taskId) => {
        late.push(setTimeout(() => slow.send({ type: 'task_response', payload: { task_id: taskId, response: payload } }), 500))
        return null
      },
    })
    await waitForHolders(a, [['slow', 'b']], "A sees B's agent")
    // Twenty callers that give up after 100 ms, long before the agent answers.
    const gaveUp = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        fetch(`${a.url}/task/request`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
          body: JSON.stringify({ region: 'us-east-1', payload: i }),
          signal: AbortSignal.timeout(100),
        }).then(
          () => 'answered',
          () => 'gave up',
        ),
      ),
    )
    expect(gaveUp.every((outcome) => outcome === 'gave up')).toBe(true)
    const pending = async () => Number(/^moonlight_cluster_relays_pending (\d+)$/m.exec(await (await fetch(`${a.url}/metrics`)).text())?.[1])
    expect(await pending()).toBe(20)
    // Once the answers came back (or at worst the deadline), nothing waits any more.
    await waitFor(async () => (await pending()) === 0, 'the relayed tasks to be settled at A', 5000)
    // And the holder serves on.
    expect((await postTask(b.url, { region: 'us-east-1', payload: 'still here' })).status).toBe(200)
  })

  test('SIGTERM of B: its clients leave the cluster at once, well before instance_ttl, and stay gone while it finishes; it exits 0', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { cluster: { instance_ttl: 10 } })
    const b = await instance(redis.url, 'b', { cluster: { instance_ttl: 10 } })
    await wsAgent(b, { nodeId: 'ws-b', region: 'us-east-1' })
    // A task in flight on B keeps it in its grace period for a while after the signal.
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    const busy = await startHttpAgent(b.url, { nodeId: 'http-b', region: 'eu-west-1', work: () => released.then(() => Response.json({ finished: true })) })
    defer(busy.stop)
    defer(release)
    await waitForHolders(
      a,
      [
        ['http-b', 'b'],
        ['ws-b', 'b'],
      ],
      "A sees B's clients",
    )
    const inFlight = postTask(b.url, { region: 'europe', payload: 'long job' })
    // Awaited below; if the test fails first, B is killed and this rejects with nobody listening.
    inFlight.catch(() => undefined)
    await waitFor(() => busy.received.length === 1, 'the long job to reach the agent')

    b.child.process.kill('SIGTERM')
    await b.child.waitForOutput('finishing in-flight tasks')
    // Gone from A's view within a few seconds, where instance_ttl alone would take 10.
    await waitForHolders(a, [], "B's clients withdrawn", 3000)
    expect((await getJson(`${a.url}/cluster`)).instances.map((info: { instance_id: string }) => info.instance_id)).toEqual(['a'])
    // Still finishing its task, B must not come back into the cluster: its ticks (at least once a second) must not claim its id again.
    const until = Date.now() + 2500
    while (Date.now() < until) {
      expect(await holders(a)).toEqual([])
      await Bun.sleep(100)
    }
    release()
    expect((await inFlight).json()).toEqual({ finished: true })
    expect(await b.child.exited).toBe(0)
    expect(await holders(a)).toEqual([])
  }, 20_000)

  test('with instance_ttl 1, a live instance is never taken for dead: its presence is refreshed before it expires', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    await wsAgent(b, { nodeId: 'steady', region: 'usa' })
    await waitForHolders(a, [['steady', 'b']], "A sees B's agent")
    // Several TTLs long: a lapse in between would drop B's agent from A's view, and B would claim its id again.
    const until = Date.now() + 3500
    while (Date.now() < until) {
      expect(await holders(a)).toEqual([['steady', 'b']])
      await Bun.sleep(50)
    }
    expect(a.child.output()).not.toContain('left')
    expect(b.child.count('cluster: connected to')).toBe(1)
  }, 20_000)
})

describe('Redis', () => {
  test('killed mid-run: A serves its own agents, degraded; restarted empty: the shared view comes back, without ghosts or duplicates', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    // On B an HTTP agent that stops heartbeating is gone within a second or two.
    const b = await instance(redis.url, 'b', { client_ttl: 1 })
    await wsAgent(a, { nodeId: 'ws-a', region: 'us-east-1' })
    await wsAgent(b, { nodeId: 'ws-b', region: 'us-east-1' })
    const wsLeaver = await wsAgent(b, { nodeId: 'ws-leaver', region: 'us-east-1' })
    const httpB = await startHttpAgent(b.url, { nodeId: 'http-b', region: 'eu-west-1' })
    const httpLeaver = await startHttpAgent(b.url, { nodeId: 'http-leaver', region: 'ap-southeast-1' })
    const heartbeats = [httpB, httpLeaver].map((agent) => setInterval(() => void agent.heartbeat().catch(() => undefined), 200))
    defer(() => heartbeats.forEach(clearInterval))
    defer(httpB.stop)
    defer(httpLeaver.stop)
    const before: Array<[string, string]> = [
      ['http-b', 'b'],
      ['http-leaver', 'b'],
      ['ws-a', 'a'],
      ['ws-b', 'b'],
      ['ws-leaver', 'b'],
    ]
    await waitForHolders(a, before, 'A sees the whole fleet')
    expect((await getJson(`${a.url}/status`)).cluster).toBe('ok')

    await redis.kill()
    await waitFor(async () => (await getJson(`${a.url}/status`)).cluster === 'degraded', 'A to say it is degraded')
    expect(await (await fetch(`${a.url}/metrics`)).text()).toContain('moonlight_cluster_redis_up 0')
    // B's WebSocket agents are out of reach; A's own agent takes every task, and B's HTTP agent is still called directly.
    for (let i = 0; i < 6; i++) {
      const result = await postTask(a.url, { region: 'us-east-1', payload: i })
      expect([result.status, result.headers.get('x-moonlight-node')]).toEqual([200, 'ws-a'])
    }
    const direct = await postTask(a.url, { region: 'eu-west-1', payload: 'still here' })
    expect([direct.status, direct.headers.get('x-moonlight-node')]).toEqual([200, 'http-b'])
    // While nobody can hear it, B's fleet changes: two agents leave, one joins.
    wsLeaver.close()
    clearInterval(heartbeats[1])
    httpLeaver.stop()
    await wsAgent(b, { nodeId: 'ws-joiner', region: 'us-east-1' })
    await waitForHolders(
      b,
      [
        ['http-b', 'b'],
        ['ws-b', 'b'],
        ['ws-joiner', 'b'],
      ],
      'B to see its own changes',
    )
    // A cannot hear of them: it still knows both of B's HTTP agents, and none of B's WebSocket agents.
    expect(await holders(a)).toEqual([
      ['http-b', 'b'],
      ['http-leaver', 'b'],
      ['ws-a', 'a'],
    ])

    await redis.restart()
    const after: Array<[string, string]> = [
      ['http-b', 'b'],
      ['ws-a', 'a'],
      ['ws-b', 'b'],
      ['ws-joiner', 'b'],
    ]
    await waitForHolders(a, after, 'A rebuilds the shared view', 10_000)
    await waitForHolders(b, after, 'B rebuilds the shared view', 10_000)
    for (const at of [a, b]) {
      expect((await getJson(`${at.url}/status`)).cluster).toBe('ok')
      expect(await (await fetch(`${at.url}/metrics`)).text()).toContain('moonlight_cluster_redis_up 1')
      // Each node id once: no ghost, no duplicate.
      const ids = (await clientsOf(at)).map((client) => client.node_id)
      expect(ids.length).toBe(new Set(ids).size)
      expect(ids.sort()).toEqual(['http-b', 'ws-a', 'ws-b', 'ws-joiner'])
    }
    // And B's WebSocket agents are reachable from A again, through the new Redis.
    const answeredBy = new Set<string | null>()
    for (let i = 0; i < 6; i++) answeredBy.add((await postTask(a.url, { region: 'us-east-1', payload: i })).headers.get('x-moonlight-node'))
    expect([...answeredBy].sort()).toEqual(['ws-a', 'ws-b', 'ws-joiner'])
  }, 30_000)

  describe("the Redis URL's password", () => {
    const password = 's3cret-pass'

    test('never appears in the output, /status, /cluster or the error after Redis is lost; the cluster works with it', async () => {
      const redis = await redisServer({ password })
      const url = `redis://:${password}@127.0.0.1:${redis.port}`
      const a = await instance(url, 'a')
      const b = await instance(url, 'b')
      await wsAgent(b, { nodeId: 'behind-a-password', region: 'usa' })
      await waitForHolders(a, [['behind-a-password', 'b']], "A sees B's agent")
      const result = await postTask(a.url, { region: 'usa', payload: 'authenticated' })
      expect([result.status, result.headers.get('x-moonlight-instance')]).toEqual([200, 'b'])

      const shown = `redis://:***@127.0.0.1:${redis.port}`
      expect(a.child.output()).toContain(`cluster: instance a through ${shown}`)
      const cluster = await getJson(`${a.url}/cluster`)
      expect(cluster.redis_url).toStartWith(shown)
      expect(cluster.instances.map((info: { instance_id: string }) => info.instance_id).sort()).toEqual(['a', 'b'])
      const status = await (await fetch(`${a.url}/status`)).text()
      expect(JSON.parse(status).cluster).toBe('ok')

      await redis.kill()
      await a.child.waitForOutput(`lost the connection to ${shown}`)
      await waitFor(async () => (await getJson(`${a.url}/status`)).cluster === 'degraded', 'A to say it is degraded')
      // A retry or two that cannot connect either.
      await Bun.sleep(600)
      const seen = [a.child.output(), b.child.output(), status, JSON.stringify(cluster), JSON.stringify(await getJson(`${a.url}/cluster`))]
      for (const text of seen) expect(text).not.toContain(password)
    })

    test('is not printed by `moonlight config check` either', async () => {
      const path = writeConfig('check-password', { cluster: { redis_url: `redis://:${password}@127.0.0.1:6379` } })
      const checked = await runCli(['config', 'check', path])
      expect(checked.code).toBe(0)
      expect(checked.stdout).toContain('"redis_url"')
      expect(checked.stdout + checked.stderr).not.toContain(password)
    })
  })
})

describe('joining a cluster', () => {
  test('two instances with the same instance_id: the second exits 1 saying the id is in use', async () => {
    const redis = await redisServer()
    const first = await instance(redis.url, 'a')
    const path = writeConfig('a-twin', { cluster: { redis_url: redis.url, instance_id: 'a', instance_ttl: 1 } })
    const twin = await spawn(['--config', path])
    expect(await twin.exited).toBe(1)
    expect(twin.output()).toContain('instance_id "a" is already in use')
    expect(twin.output()).not.toContain('listening on')
    // The first one is undisturbed.
    expect((await getJson(`${first.url}/status`)).cluster).toBe('ok')
    expect((await getJson(`${first.url}/cluster`)).instances.map((info: { instance_id: string }) => info.instance_id)).toEqual(['a'])
  })

  test("an instance refused for a duplicate instance_id answers none of the running one's relayed tasks meanwhile", async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    const agent = await wsAgent(a, { nodeId: 'on-a', region: 'usa' })
    await waitForHolders(b, [['on-a', 'a']], "B sees A's agent")
    // A steady stream of tasks relayed from B to A's agent while twins of A try to start.
    let streaming = true
    const answers: TaskResult[] = []
    const workers = Array.from({ length: 16 }, async (_, worker) => {
      for (let i = 0; streaming; i++) answers.push(await postTask(b.url, { region: 'usa', payload: `${worker}-${i}` }))
    })
    const path = writeConfig('a-twin', { cluster: { redis_url: redis.url, instance_id: 'a', instance_ttl: 1 } })
    for (let attempt = 0; attempt < 3; attempt++) {
      const twin = await spawn(['--config', path])
      expect(await twin.exited).toBe(1)
      expect(twin.output()).toContain('instance_id "a" is already in use')
    }
    streaming = false
    await Promise.all(workers)
    // Each task went to the agent once, at the first attempt: no twin told B the agent was gone.
    expect(answers.length).toBeGreaterThan(0)
    const retried = answers.filter((answer) => answer.status !== 200 || answer.headers.get('x-moonlight-attempts') !== '1')
    expect(retried.map((answer) => `${answer.status} ${answer.headers.get('x-moonlight-attempts')}`)).toEqual([])
    expect(agent.received.length).toBe(answers.length)
    expect(new Set(agent.received).size).toBe(answers.length)
  }, 20_000)

  /** Starts `serve` with a plain config file plus `args`/`env`, checks it joined A's cluster, and that its agent answers a task submitted to A. */
  async function joinsTheCluster(how: (redisUrl: string) => { args?: string[]; env?: Record<string, string> }): Promise<void> {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const { args = [], env = {} } = how(redis.url)
    const joined = await spawn(['--config', writeConfig('plain', {}), ...args], env)
    if (!joined.url) throw new Error(`did not start:\n${joined.output()}`)
    const { cluster, instance_id: id } = await getJson(`${joined.url}/status`)
    expect(cluster).toBe('ok')
    expect(joined.output()).toContain(`cluster: instance ${id} through ${redis.url}, with a`)
    await waitFor(async () => (await getJson(`${a.url}/cluster`)).instances.some((info: { instance_id: string }) => info.instance_id === id), `A to see ${id}`)
    const agent = await startWsAgent(`${joined.url.replace(/^http/, 'ws')}/ws`, { nodeId: 'joined', region: 'singapore' })
    defer(agent.close)
    await waitForHolders(a, [['joined', id]], 'A lists the agent of the instance that joined')
    const result = await postTask(a.url, { region: 'singapore', payload: 'via A' })
    expect([result.status, result.headers.get('x-moonlight-node'), result.headers.get('x-moonlight-instance')]).toEqual([200, 'joined', id])
  }

  test('`serve --redis URL` puts an instance in the cluster', () => joinsTheCluster((url) => ({ args: ['--redis', url] })))

  test('MLS_REDIS_URL puts an instance in the cluster', () => joinsTheCluster((url) => ({ env: { MLS_REDIS_URL: url } })))

  test('two instances on one host, each on a free port (--port 0) and without instance_id, get distinct default ids and both join', async () => {
    const redis = await redisServer()
    const plain = writeConfig('plain', {})
    const first = await spawn(['--config', plain, '--redis', redis.url])
    const second = await spawn(['--config', plain], { MLS_REDIS_URL: redis.url })
    for (const joined of [first, second]) if (!joined.url) throw new Error(`did not start:\n${joined.output()}`)
    const ids = await Promise.all([first, second].map(async (joined) => (await getJson(`${joined.url}/status`)).instance_id as string))
    // The default names the host and the port it listens on.
    expect(ids).toEqual([first, second].map((joined) => `${hostname()}:${new URL(joined.url).port}`))
    await waitFor(
      async () =>
        (await getJson(`${first.url}/cluster`)).instances
          .map((info: { instance_id: string }) => info.instance_id)
          .sort()
          .join() === [...ids].sort().join(),
      'the first to see both',
    )
  })

  test('a bad Redis URL is rejected: by `serve --redis` at start-up and by `moonlight config check` in the file', async () => {
    const bad = await spawn(['--config', writeConfig('plain', {}), '--redis', 'http://127.0.0.1:6379'])
    expect(await bad.exited).toBe(1)
    expect(bad.output()).toContain('invalid --redis / MLS_REDIS_URL: must be a redis:// or rediss:// URL')
    const checked = await runCli(['config', 'check', writeConfig('bad-url', { cluster: { redis_url: 'http://127.0.0.1:6379' } })])
    expect(checked.code).toBe(1)
    expect(checked.stdout).toContain('cluster.redis_url: must be a redis:// or rediss:// URL')
  })
})
