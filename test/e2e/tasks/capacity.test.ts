/** Agent slots and the queue (issue 24): real agents announce max_in_flight, the server never overloads them, bursts wait. */
import { describe, expect, test } from 'bun:test'
import { createAgent } from '../../../packages/sdk/src/index.ts'
import { parseConfig } from '../../../src/config/config.ts'
import { openWs, postTask, SEED_CONFIG, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { Occupancy } from '../../support/occupancy.ts'
import { submitTask, TASK_HEADERS, taskResult } from '../../support/task-calls.ts'

const { defer, server } = testScope()

/** A WebSocket agent that answers each task after `delayMs`, counting how many it holds at once. */
async function slowWsAgent(wsUrl: string, nodeId: string, region: string, delayMs: number, register: Record<string, unknown> = {}) {
  const peer = await openWs(wsUrl)
  const occupancy = new Occupancy()
  const order: unknown[] = []
  peer.socket.addEventListener('message', (event) => {
    const message = JSON.parse(String(event.data))
    if (message.type !== 'task') return
    occupancy.enter()
    order.push(message.payload)
    setTimeout(() => {
      occupancy.leave()
      peer.send({ type: 'task_response', payload: { task_id: message.task_id, response: { node: nodeId, echo: message.payload } } })
    }, delayMs)
  })
  peer.send({ type: 'register', payload: { node_id: nodeId, token: TOKEN, region, ...register } })
  expect((await peer.next('registered')).type).toBe('registered')
  defer(peer.close)
  return { peer, occupancy, order }
}

/** An HTTP agent whose /work takes `delayMs`, counting how many calls it holds at once. */
async function slowHttpAgent(url: string, nodeId: string, region: string, delayMs: number, extra: Record<string, unknown> = {}) {
  const occupancy = new Occupancy()
  const agent = await startHttpAgent(url, {
    nodeId,
    region,
    work: async (payload) => {
      occupancy.enter()
      await Bun.sleep(delayMs)
      occupancy.leave()
      return Response.json({ node: nodeId, echo: payload })
    },
  })
  defer(agent.stop)
  expect((await agent.heartbeat(extra)).status).toBe(200)
  return { agent, occupancy }
}

async function clients(url: string): Promise<Array<Record<string, any>>> {
  const response = await fetch(`${url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
  return ((await response.json()) as { clients: Array<Record<string, any>> }).clients
}

describe('slots', () => {
  test('two one-slot WebSocket agents and eight tasks at once: neither ever holds two, every task is answered', async () => {
    const mls = server()
    const a = await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 60, { max_in_flight: 1 })
    const b = await slowWsAgent(mls.wsUrl, 'gpu-b', 'eu-west-1', 60, { max_in_flight: 1 })
    const results = await Promise.all(Array.from({ length: 8 }, (_, job) => postTask(mls.url, { region: 'eu-west-1', payload: { job } })))
    expect(results.map((result) => result.status)).toEqual(Array(8).fill(200))
    expect(a.occupancy.most).toBe(1)
    expect(b.occupancy.most).toBe(1)
    expect(a.occupancy.served + b.occupancy.served).toBe(8)
  })

  test('two one-slot HTTP agents and eight tasks at once: neither ever holds two, every task is answered', async () => {
    const mls = server()
    const a = await slowHttpAgent(mls.url, 'gpu-a', 'eu-west-1', 60, { max_in_flight: 1 })
    const b = await slowHttpAgent(mls.url, 'gpu-b', 'eu-west-1', 60, { max_in_flight: 1 })
    const results = await Promise.all(Array.from({ length: 8 }, (_, job) => postTask(mls.url, { region: 'eu-west-1', payload: { job } })))
    expect(results.map((result) => result.status)).toEqual(Array(8).fill(200))
    expect(a.occupancy.most).toBe(1)
    expect(b.occupancy.most).toBe(1)
    expect(a.occupancy.served + b.occupancy.served).toBe(8)
  })

  test('an agent without max_in_flight has no limit, as before', async () => {
    const mls = server()
    const a = await slowWsAgent(mls.wsUrl, 'cpu-a', 'eu-west-1', 100)
    const results = await Promise.all(Array.from({ length: 4 }, (_, job) => postTask(mls.url, { region: 'eu-west-1', payload: { job } })))
    expect(results.map((result) => result.status)).toEqual([200, 200, 200, 200])
    expect(a.occupancy.most).toBe(4)
  })

  test('a heartbeat changes the slots, and /clients shows in flight / max', async () => {
    const mls = server()
    const a = await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 150, { max_in_flight: 1 })
    expect((await clients(mls.url))[0]).toMatchObject({ node_id: 'gpu-a', in_flight: 0, max_in_flight: 1 })
    a.peer.send({ type: 'heartbeat', payload: { max_in_flight: 3 } })
    await a.peer.next('heartbeat_ack')
    const pending = Promise.all(Array.from({ length: 3 }, (_, job) => postTask(mls.url, { region: 'eu-west-1', payload: { job } })))
    await waitFor(async () => (await clients(mls.url))[0]!.in_flight === 3, 'three tasks in flight')
    expect((await clients(mls.url))[0]).toMatchObject({ in_flight: 3, max_in_flight: 3 })
    expect((await pending).map((result) => result.status)).toEqual([200, 200, 200])
    expect(a.occupancy.most).toBe(3)
  })

  test('a task naming a full agent waits for its slot rather than failing', async () => {
    const mls = server()
    const a = await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 80, { max_in_flight: 1 })
    const results = await Promise.all([1, 2, 3].map((job) => postTask(mls.url, { node_id: 'gpu-a', payload: { job } })))
    expect(results.map((result) => result.status)).toEqual([200, 200, 200])
    expect(a.occupancy.most).toBe(1)
  })
})

describe('the SDK announces its concurrency as slots', () => {
  for (const protocol of ['ws', 'http'] as const) {
    test(`${protocol}: concurrency 1 is max_in_flight 1, and three tasks at once never overlap on it`, async () => {
      const mls = server()
      let holding = 0
      let most = 0
      const agent = createAgent({
        servers: mls.url,
        token: TOKEN,
        region: 'eu-west-1',
        nodeId: `sdk-${protocol}`,
        protocol,
        concurrency: 1,
        handler: async (payload) => {
          most = Math.max(most, ++holding)
          await Bun.sleep(30)
          holding--
          return payload
        },
      })
      defer(() => agent.stop())
      await agent.ready
      expect((await clients(mls.url))[0]).toMatchObject({ node_id: `sdk-${protocol}`, max_in_flight: 1 })
      const results = await Promise.all([1, 2, 3].map((n) => postTask(mls.url, { region: 'eu-west-1', payload: n })))
      expect(results.map((result) => result.status)).toEqual([200, 200, 200])
      expect(most).toBe(1)
    })
  }
})

describe('the queue', () => {
  test('a burst larger than every slot waits and is answered; the queue is empty afterwards', async () => {
    const mls = server()
    const agents = await Promise.all([1, 2, 3].map((n) => slowWsAgent(mls.wsUrl, `gpu-${n}`, 'eu-west-1', 30, { max_in_flight: 2 })))
    const results = await Promise.all(Array.from({ length: 30 }, (_, job) => postTask(mls.url, { region: 'eu-west-1', payload: { job } })))
    expect(results.map((result) => result.status)).toEqual(Array(30).fill(200))
    for (const agent of agents) expect(agent.occupancy.most).toBeLessThanOrEqual(2)
    expect(agents.reduce((sum, agent) => sum + agent.occupancy.served, 0)).toBe(30)
  })

  test('past queue.timeout: 503 queue_timeout with Retry-After; the slot-holder is answered', async () => {
    const mls = server({ queue: { timeout: 0.2 } })
    await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 600, { max_in_flight: 1 })
    const first = postTask(mls.url, { region: 'eu-west-1', payload: 1 })
    await Bun.sleep(50)
    const second = await postTask(mls.url, { region: 'eu-west-1', payload: 2 })
    expect(second.status).toBe(503)
    expect(second.json()).toMatchObject({ code: 'queue_timeout', region: 'eu-west-1' })
    expect(second.headers.get('retry-after')).toBe('1')
    expect((await first).status).toBe(200)
    const metrics = await (await fetch(`${mls.url}/metrics`)).text()
    expect(metrics).toContain('moonlight_queue_shed_total{reason="queue_timeout"} 1')
    expect(metrics).toContain('moonlight_queue_wait_seconds_count 1')
    const status = await (await fetch(`${mls.url}/status`)).json()
    expect(status.queue).toEqual({ depth: 0, shed: { queue_timeout: 1, queue_full: 0, shutting_down: 0 }, retries_refused: 0 })
  })

  test("a task's own queue_timeout shortens the wait", async () => {
    const mls = server({ queue: { timeout: 30 } })
    await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 600, { max_in_flight: 1 })
    const first = postTask(mls.url, { region: 'eu-west-1', payload: 1 })
    await Bun.sleep(50)
    const second = await postTask(mls.url, { region: 'eu-west-1', payload: 2, queue_timeout: 0.1 })
    expect(second.json()).toMatchObject({ code: 'queue_timeout' })
    expect((await first).status).toBe(200)
  })

  test("a wait cut short by the task's own timeout names the time it had, not the longer queue_timeout", async () => {
    const mls = server({ queue: { timeout: 30 } })
    await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 900, { max_in_flight: 1 })
    const first = postTask(mls.url, { region: 'eu-west-1', payload: 1 })
    await Bun.sleep(50)
    const second = await postTask(mls.url, { region: 'eu-west-1', payload: 2, timeout: 0.3, queue_timeout: 1e308 })
    expect(second.json()).toMatchObject({ code: 'queue_timeout' })
    expect(second.json().error).toMatch(/^every client of region "eu-west-1" was busy and no slot freed within 0\.[23]\d* s$/)
    expect((await first).status).toBe(200)
  })

  test("past queue.max: 503 queue_full with Retry-After, at once, in a pool's queue and in an agent's own (tasks naming it)", async () => {
    const cases = [
      {
        target: { region: 'eu-west-1' },
        refusal: { region: 'eu-west-1', pool: 'global' },
        error: 'every client of region "eu-west-1" is busy and 1 task already waits for a slot',
      },
      { target: { node_id: 'gpu-1' }, refusal: { node_id: 'gpu-1' }, error: 'client "gpu-1" is busy and 1 task already waits for its slot' },
    ]
    for (const { target, refusal, error } of cases) {
      const mls = server({ queue: { max: 1 } })
      await slowWsAgent(mls.wsUrl, 'gpu-1', 'eu-west-1', 300, { max_in_flight: 1 })
      const first = postTask(mls.url, { ...target, payload: 1 })
      await Bun.sleep(30)
      const queued = postTask(mls.url, { ...target, payload: 2 })
      await Bun.sleep(30)
      const third = await postTask(mls.url, { ...target, payload: 3 })
      expect({ target, status: third.status, retryAfter: third.headers.get('retry-after'), body: third.json() }).toMatchObject({
        target,
        status: 503,
        retryAfter: '1',
        body: { code: 'queue_full', max: 1, error, ...refusal },
      })
      expect([(await first).status, (await queued).status]).toEqual([200, 200])
    }
  })

  test('priorities reorder the queue: high before normal before low, FIFO within a class', async () => {
    const mls = server()
    // Long enough for all six to be queued behind the blocker.
    const a = await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 250, { max_in_flight: 1 })
    const blocker = postTask(mls.url, { region: 'eu-west-1', payload: 'blocker' })
    await waitFor(() => a.order.length === 1, 'the blocker on the agent')
    const waiting: Array<Promise<unknown>> = []
    for (const [name, priority] of [
      ['low-1', 'low'],
      ['normal-1', 'normal'],
      ['high-1', 'high'],
      ['low-2', 'low'],
      ['high-2', 'high'],
      ['normal-2', undefined],
    ] as const) {
      waiting.push(postTask(mls.url, { region: 'eu-west-1', payload: name, ...(priority ? { priority } : {}) }))
      // Each must be queued before the next, for the order within a class to be defined.
      await Bun.sleep(15)
    }
    await Promise.all([blocker, ...waiting])
    expect(a.order).toEqual(['blocker', 'high-1', 'high-2', 'normal-1', 'normal-2', 'low-1', 'low-2'])
  })

  test('a cancelled queued async task never runs', async () => {
    const mls = server()
    const a = await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 300, { max_in_flight: 1 })
    const first = await submitTask(mls.url, { region: 'eu-west-1', payload: 'first', mode: 'async' })
    await waitFor(() => a.order.length === 1, 'the first task on the agent')
    const queued = await submitTask(mls.url, { region: 'eu-west-1', payload: 'queued', mode: 'async' })
    const { task_id: queuedId } = JSON.parse(queued.text)
    const cancel = await fetch(`${mls.url}/task/${queuedId}`, { method: 'DELETE', headers: TASK_HEADERS })
    expect(cancel.status).toBeLessThan(300)
    const { task_id: firstId } = JSON.parse(first.text)
    expect((await taskResult(mls.url, firstId, 5)).response.status).toBe(200)
    await Bun.sleep(100)
    expect(a.order).toEqual(['first'])
  })

  test('a stop answers queued tasks 503 shutting_down', async () => {
    const mls = server()
    await slowWsAgent(mls.wsUrl, 'gpu-a', 'eu-west-1', 400, { max_in_flight: 1 })
    const first = postTask(mls.url, { region: 'eu-west-1', payload: 1 })
    await Bun.sleep(50)
    const queued = postTask(mls.url, { region: 'eu-west-1', payload: 2 })
    await Bun.sleep(50)
    const stopping = mls.stop()
    const answer = await queued
    expect(answer.status).toBe(503)
    expect(answer.json().code).toBe('shutting_down')
    await first
    await stopping
  })
})

describe('least-request balancing', () => {
  test('a slow/fast pair under eight callers: least_request sends most tasks to the fast agent, round_robin half', async () => {
    const shares: Record<string, number> = {}
    for (const balance of ['round_robin', 'least_request'] as const) {
      const mls = server({ routing: { balance } })
      const slow = await slowWsAgent(mls.wsUrl, 'slow', 'eu-west-1', 80)
      const fast = await slowWsAgent(mls.wsUrl, 'fast', 'eu-west-1', 2)
      // Eight callers, each sending its next task when the last is answered.
      await Promise.all(
        Array.from({ length: 8 }, async (_, caller) => {
          for (let n = 0; n < 8; n++) expect((await postTask(mls.url, { region: 'eu-west-1', payload: { caller, n } })).status).toBe(200)
        }),
      )
      shares[balance] = fast.occupancy.served / (fast.occupancy.served + slow.occupancy.served)
      await mls.stop()
    }
    expect(shares.round_robin).toBeLessThan(0.7)
    expect(shares.least_request).toBeGreaterThan(0.75)
  })
})

describe('retry budget', () => {
  test('a failing region is not flooded with retries while a healthy region is served', async () => {
    const mls = server({ retry_count: 3, health: { max_ejected_percent: 0 }, routing: { retry_budget: { percent: 20, min: 2 } } })
    let failingCalls = 0
    for (const n of [1, 2]) {
      const failing = await startHttpAgent(mls.url, {
        nodeId: `eu-${n}`,
        region: 'eu-west-1',
        work: async () => {
          failingCalls++
          await Bun.sleep(40)
          return Response.json({ error: 'down' }, { status: 500 })
        },
      })
      defer(failing.stop)
    }
    const healthy = await startHttpAgent(mls.url, { nodeId: 'us-1', region: 'us-east-1' })
    defer(healthy.stop)
    const [failed, served] = await Promise.all([
      Promise.all(Array.from({ length: 20 }, (_, job) => postTask(mls.url, { region: 'eu-west-1', payload: { job }, fallback: 'none' }))),
      Promise.all(Array.from({ length: 20 }, (_, job) => postTask(mls.url, { region: 'us-east-1', payload: { job } }))),
    ])
    expect(served.map((result) => result.status)).toEqual(Array(20).fill(200))
    expect(failed.map((result) => result.status)).toEqual(Array(20).fill(502))
    const refused = failed.filter((result) => result.json().reason === 'retry_budget_exhausted')
    expect(refused.length).toBeGreaterThan(0)
    expect(refused[0]!.json().attempts).toHaveLength(1)
    // Without the budget every task would have been tried four times: 80 calls.
    expect(failingCalls).toBeLessThan(80)
    const metrics = await (await fetch(`${mls.url}/metrics`)).text()
    expect(metrics).toContain(`moonlight_retries_refused_total{pool="eu-west-1"} ${refused.length}`)
  })
})

describe('a reload', () => {
  test('routing.balance: least_request applies to the next tasks, sending them past an agent that holds tasks', async () => {
    const mls = server({ routing: { balance: 'round_robin' } })
    const holding = await slowWsAgent(mls.wsUrl, 'holding', 'eu-west-1', 60_000)
    const quick = await slowWsAgent(mls.wsUrl, 'quick', 'eu-west-1', 1)
    // Round-robin alternates whatever the load: the agent holding its tasks gets every other one.
    const held = [postTask(mls.url, { region: 'eu-west-1', payload: 0 }), postTask(mls.url, { region: 'eu-west-1', payload: 1 })]
    await waitFor(() => holding.occupancy.now === 1 && quick.occupancy.served === 1, 'one task on each agent')
    void held

    mls.server.reload(parseConfig({ ...SEED_CONFIG, routing: { balance: 'least_request' } }, 'test'))
    // Least-request in a pool of two always compares both: the idle one wins every time.
    for (let job = 0; job < 6; job++) expect((await postTask(mls.url, { region: 'eu-west-1', payload: job })).status).toBe(200)
    expect(holding.order).toHaveLength(1)
    expect(quick.occupancy.served).toBe(7)
  })

  test('queue.timeout and queue.max apply to the next task waiting for a slot', async () => {
    const mls = server({ queue: { timeout: 30, max: 100 } })
    const agent = await slowWsAgent(mls.wsUrl, 'one-slot', 'eu-west-1', 60_000, { max_in_flight: 1 })
    void postTask(mls.url, { region: 'eu-west-1', payload: 'held' })
    await waitFor(() => agent.occupancy.now === 1, 'the agent holds its one task')

    mls.server.reload(parseConfig({ ...SEED_CONFIG, queue: { timeout: 0.2, max: 1 } }, 'test'))
    const waiting = postTask(mls.url, { region: 'eu-west-1', payload: 'waits' })
    await waitFor(
      async () => (await (await fetch(`${mls.url}/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()).queue?.depth === 1,
      'one task waits',
    )
    const full = await postTask(mls.url, { region: 'eu-west-1', payload: 'no room' })
    expect([full.status, full.json().code]).toEqual([503, 'queue_full'])
    const timedOut = await waiting
    expect([timedOut.status, timedOut.json().code]).toEqual([503, 'queue_timeout'])
    expect(timedOut.json().error).toContain('within 0.2 s')
  })
})

describe('slots echoed', () => {
  test('registered and heartbeat_ack say the slots the server counts; an agent without slots gets no max_in_flight', async () => {
    const mls = server()
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    peer.send({ type: 'register', payload: { node_id: 'echo-1', token: TOKEN, region: 'eu-west-1', max_in_flight: 2 } })
    expect((await peer.next('registered')).payload.max_in_flight).toBe(2)
    peer.send({ type: 'heartbeat', payload: { max_in_flight: 3 } })
    expect((await peer.next('heartbeat_ack')).payload.max_in_flight).toBe(3)
    peer.send({ type: 'heartbeat' })
    expect((await peer.next('heartbeat_ack')).payload.max_in_flight).toBe(3)

    const plain = await openWs(mls.wsUrl)
    defer(plain.close)
    plain.send({ type: 'register', payload: { node_id: 'echo-2', token: TOKEN, region: 'eu-west-1' } })
    expect('max_in_flight' in (await plain.next('registered')).payload).toBe(false)
  })
})
