/**
 * Agent slots in a cluster (issue 24): a WebSocket agent's slots are exact however many instances
 * send it tasks (its holder alone counts them and tells the others when it is full); an HTTP agent
 * that every instance calls gets a share of its slots per instance.
 */
import { describe, expect, test } from 'bun:test'
import { RedisClient } from 'bun'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { openWs, postTask, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { Occupancy } from '../../support/occupancy.ts'

const { defer } = testScope()
const { redisServer, instance } = clusterScope(defer)

describe('slots in a cluster', () => {
  test('a one-slot WebSocket agent on A, tasks at A and at B at once: never two on the agent, every task answered', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { queue: { timeout: 20 } })
    const b = await instance(redis.url, 'b', { queue: { timeout: 20 } })
    const peer = await openWs(a.wsUrl)
    defer(peer.close)
    const occupancy = new Occupancy()
    peer.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type !== 'task') return
      occupancy.enter()
      setTimeout(() => {
        occupancy.leave()
        peer.send({ type: 'task_response', payload: { task_id: message.task_id, response: { echo: message.payload } } })
      }, 80)
    })
    peer.send({ type: 'register', payload: { node_id: 'gpu', token: TOKEN, region: 'eu-west-1', max_in_flight: 1 } })
    expect((await peer.next('registered')).type).toBe('registered')
    // B knows the agent and its one slot.
    await waitFor(
      async () => (await getJson(`${b.url}/clients`)).clients.some((c: any) => c.node_id === 'gpu' && c.max_in_flight === 1),
      'B sees the agent and its slots',
    )

    const results = await Promise.all(
      Array.from({ length: 10 }, (_, job) => postTask(job % 2 === 0 ? a.url : b.url, { region: 'eu-west-1', payload: { job } })),
    )
    expect(results.map((result) => result.status)).toEqual(Array(10).fill(200))
    expect(occupancy.most).toBe(1)
    expect(occupancy.served).toBe(10)
  })

  test('a two-slot HTTP agent that A and B both call: each uses its share (one slot), never more than two on the agent, every task answered', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { queue: { timeout: 20 } })
    const b = await instance(redis.url, 'b', { queue: { timeout: 20 } })
    const occupancy = new Occupancy()
    const agent = await startHttpAgent(a.url, {
      nodeId: 'web',
      region: 'eu-west-1',
      work: async (payload) => {
        occupancy.enter()
        await Bun.sleep(80)
        occupancy.leave()
        return Response.json({ echo: payload })
      },
    })
    defer(agent.stop)
    expect((await agent.heartbeat({ max_in_flight: 2 })).status).toBe(200)
    await waitFor(
      async () => (await getJson(`${b.url}/clients`)).clients.some((c: any) => c.node_id === 'web' && c.max_in_flight === 2),
      'B sees the agent and its slots',
    )
    // The shares follow the live instances each one knows of: both must know there are two.
    for (const at of [a, b]) await waitFor(async () => (await getJson(`${at.url}/cluster`)).instances.length === 2, `${at.id} knows both instances`)

    const results = await Promise.all(
      Array.from({ length: 12 }, (_, job) => postTask(job % 2 === 0 ? a.url : b.url, { region: 'eu-west-1', payload: { job } })),
    )
    expect(results.map((result) => result.status)).toEqual(Array(12).fill(200))
    expect(occupancy.most).toBeLessThanOrEqual(2)
    expect(occupancy.served).toBe(12)
  })

  test('a task relayed while the agent is full waits at the holder in its own priority class and no longer than its own queue_timeout', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { queue: { timeout: 20 } })
    // The test is another instance on the wire: it publishes relayed tasks on A's channel and reads A's replies on its own.
    const peer = new RedisClient(redis.url)
    const listener = new RedisClient(redis.url)
    defer(() => peer.close())
    defer(() => listener.close())
    const replies = new Map<string, any>()
    await listener.subscribe('mls:reply:peer', (message) => {
      const [envelope, body] = message.split('\n')
      const reply = JSON.parse(envelope!)
      replies.set(reply.key, { ...reply, body })
    })
    const agent = await openWs(a.wsUrl)
    defer(agent.close)
    const received: unknown[] = []
    let release: (() => void) | undefined
    agent.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type !== 'task') return
      received.push(message.payload.n)
      const answer = () => agent.send({ type: 'task_response', payload: { task_id: message.task_id, response: { n: message.payload.n } } })
      // The first task holds the one slot until the test lets it go; the rest are answered at once.
      if (message.payload.n === 'first') release = answer
      else answer()
    })
    agent.send({ type: 'register', payload: { node_id: 'gpu', token: TOKEN, region: 'eu-west-1', max_in_flight: 1 } })
    expect((await agent.next('registered')).type).toBe('registered')
    const first = postTask(a.url, { region: 'eu-west-1', payload: { n: 'first' } })
    // Awaited below; a failure before then would otherwise surface as an unhandled rejection when the server stops.
    first.catch(() => undefined)
    await waitFor(async () => release !== undefined, 'the agent holds the first task')

    const relay = (key: string, n: string, extra: Record<string, unknown> = {}) =>
      peer.send('PUBLISH', [
        'mls:relay:a',
        JSON.stringify({ origin: 'peer', key, task_id: `t-${key}`, node_id: 'gpu', timeout_ms: 20_000, raw_answer: true, ...extra, payload: { n } }),
      ])
    // Its own queue_timeout (0.3 s), not the holder's queue.timeout (20 s): the origin hears "full" and tries elsewhere.
    const shortStarted = performance.now()
    await relay('short', 'short', { queue_timeout_ms: 300 })
    await waitFor(async () => replies.has('short'), 'the short wait ends', 5_000)
    expect(performance.now() - shortStarted).toBeLessThan(5_000)
    expect(replies.get('short')).toMatchObject({ key: 'short', kind: 'unreachable', full: true })

    // Queued in this order at the holder; served in priority order once the slot frees.
    await relay('low', 'low', { priority: 'low' })
    await relay('normal', 'normal')
    await relay('high', 'high', { priority: 'high' })
    await waitFor(async () => (await getJson(`${a.url}/status`)).queue.depth === 3, 'three relayed tasks wait at A')
    release!()
    expect((await first).status).toBe(200)
    await waitFor(async () => replies.size === 4, 'every relayed task is answered')
    expect(received).toEqual(['first', 'high', 'normal', 'low'])
    for (const key of ['low', 'normal', 'high']) expect([replies.get(key).status, JSON.parse(replies.get(key).body)]).toEqual([200, { n: key }])
  })

  test("an instance relaying a task to another's agent sends the task's priority and queue_timeout with it", async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 3 })
    const b = await instance(redis.url, 'b', { task_timeout: 3 })
    const listener = new RedisClient(redis.url)
    defer(() => listener.close())
    const relayed: any[] = []
    await listener.subscribe('mls:relay:a', (message) => relayed.push(JSON.parse(message)))
    const agent = await openWs(a.wsUrl)
    defer(agent.close)
    agent.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'task') agent.send({ type: 'task_response', payload: { task_id: message.task_id, response: { ok: true } } })
    })
    agent.send({ type: 'register', payload: { node_id: 'gpu', token: TOKEN, region: 'eu-west-1', max_in_flight: 2 } })
    expect((await agent.next('registered')).type).toBe('registered')
    await waitFor(async () => (await getJson(`${b.url}/clients`)).clients.some((c: any) => c.node_id === 'gpu'), 'B sees the agent')

    const plain = await postTask(b.url, { region: 'eu-west-1', payload: { n: 1 } })
    const urgent = await postTask(b.url, { region: 'eu-west-1', payload: { n: 2 }, priority: 'high', queue_timeout: 2.5 })
    // A queue_timeout past any deadline (the API bounds it by nothing else): sent as the time the task has left, a whole number of ms.
    const patient = await postTask(b.url, { region: 'eu-west-1', payload: { n: 3 }, priority: 'low', queue_timeout: 1e13 })
    expect([plain, urgent, patient].map((result) => [result.status, result.headers.get('x-moonlight-instance')])).toEqual([
      [200, 'a'],
      [200, 'a'],
      [200, 'a'],
    ])
    await waitFor(async () => relayed.length === 3, 'the relayed tasks seen on the channel')
    expect(relayed.map((message) => [message.payload.n, message.priority, message.queue_timeout_ms])).toEqual([
      [1, undefined, undefined],
      [2, 'high', 2500],
      [3, 'low', relayed[2].timeout_ms],
    ])
    expect(relayed[2].timeout_ms).toBeLessThanOrEqual(3000)
  })
})
