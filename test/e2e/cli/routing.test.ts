/** `moonlight task`'s routing flags against a real server and real WebSocket agents. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { expectOneLine, runMain } from '../../support/cli.ts'
import { postTask, startTestServer, startWsAgent, type TestServer, TOKEN, type WsAgent, waitFor } from '../../support/helpers.ts'

let mls: TestServer
let agents: WsAgent[] = []

beforeAll(async () => {
  mls = startTestServer({ retry_count: 2, task_timeout: 5, health: { max_ejected_percent: 0 } })
  agents = [
    await startWsAgent(mls.wsUrl, { nodeId: 'east-1', region: 'us-east-1' }),
    await startWsAgent(mls.wsUrl, { nodeId: 'east-2', region: 'us-east-1' }),
    await startWsAgent(mls.wsUrl, { nodeId: 'eu-broken', region: 'eu-west-1', answer: () => ({ status: 500, response: { error: 'disk full' } }) }),
    await startWsAgent(mls.wsUrl, { nodeId: 'mute-1', region: 'mars', answer: () => null }),
  ]
})

afterAll(async () => {
  for (const agent of agents) agent.close()
  await mls?.stop()
})

const task = (...args: string[]) => runMain(['task', '--server', mls.url, '--token', TOKEN, '--payload', '{"n":1}', ...args])

describe('moonlight clients', () => {
  test("shows a ramping client's effective weight beside its weight", async () => {
    const ramping = startTestServer({ health: { slow_start: 30 } })
    const agent = await startWsAgent(ramping.wsUrl, { nodeId: 'cold-1', region: 'usa', weight: 10 })
    try {
      const listed = await runMain(['clients', '--server', ramping.url, '--token', TOKEN])
      expect(listed.code).toBe(0)
      expect(listed.stdout).toMatch(/cold-1\s+usa\s+ws\s+\S+\s+10 \(now 1\)\s+healthy/)
    } finally {
      agent.close()
      await ramping.stop()
    }
  })
})

describe('moonlight clients slots', () => {
  test("shows an agent's tasks in flight of its slots (1/2), and only the count for an agent without slots", async () => {
    const slotted = startTestServer({})
    const held: string[] = []
    const busy = await startWsAgent(slotted.wsUrl, {
      nodeId: 'gpu-1',
      region: 'eu',
      register: { max_in_flight: 2 },
      answer: (_payload, taskId) => {
        held.push(taskId)
        return null
      },
    })
    const plain = await startWsAgent(slotted.wsUrl, { nodeId: 'cpu-1', region: 'us' })
    try {
      const running = postTask(slotted.url, { region: 'eu', payload: 1 })
      await waitFor(() => held.length === 1, 'the agent holds the task')
      const listed = await runMain(['clients', '--server', slotted.url, '--token', TOKEN])
      expect(listed.code).toBe(0)
      expect(listed.stdout).toMatch(/gpu-1\s+eu\s+ws\s+\S+\s+1\s+healthy\s+1\/2\s+0\s+0/)
      expect(listed.stdout).toMatch(/cpu-1\s+us\s+ws\s+\S+\s+1\s+healthy\s+0\s+0\s+0/)
      busy.send({ type: 'task_response', payload: { task_id: held[0], response: {} } })
      expect((await running).status).toBe(200)
    } finally {
      busy.close()
      plain.close()
      await slotted.stop()
    }
  })
})

describe('moonlight task routing flags', () => {
  test("--node-id reaches that agent; an unknown one exits 1 with the server's reason", async () => {
    const [east1, east2] = agents
    const before = east2!.received.length
    for (let i = 0; i < 3; i++) expect((await task('--node-id', 'east-2')).code).toBe(0)
    expect(east2!.received.length - before).toBe(3)
    expect(east1!.received.length).toBe(0)
    const unknown = await task('--node-id', 'nobody')
    expect(unknown.code).toBe(1)
    expect(expectOneLine(unknown.stderr)).toContain('no client "nobody"')
  })

  test('--key sends every task with the key to one agent', async () => {
    const seen = new Set<string>()
    for (let i = 0; i < 6; i++) {
      const before = agents.map((agent) => agent.received.length)
      expect((await task('--region', 'us-east-1', '--key', 'user-42')).code).toBe(0)
      agents.forEach((agent, at) => {
        if (agent.received.length > before[at]!) seen.add(agent.nodeId)
      })
    }
    expect(seen.size).toBe(1)
  })

  test('--fallback none keeps a failing eu-west-1 task in eu-west-1: exit 1, nothing reaches us-east-1', async () => {
    const before = agents[0]!.received.length + agents[1]!.received.length
    const result = await task('--region', 'eu-west-1', '--fallback', 'none')
    expect(result.code).toBe(1)
    expect(expectOneLine(result.stderr)).toContain('every attempt failed (3)')
    expect(agents[0]!.received.length + agents[1]!.received.length).toBe(before)
    const bad = await task('--fallback', 'up')
    expect(bad.code).toBe(2)
    expect(expectOneLine(bad.stderr)).toContain('--fallback must be "parent" or "none"')
  })

  test('--retry-on status retries a failing 5xx; --retry-on unreachable,lost does not; an unknown class exits 2', async () => {
    const retried = await task('--region', 'eu-west-1', '--fallback', 'none', '--retry-on', 'status')
    expect(expectOneLine(retried.stderr)).toContain('every attempt failed (3)')
    const once = await task('--region', 'eu-west-1', '--fallback', 'none', '--retry-on', 'unreachable,lost')
    expect(once.code).toBe(1)
    expect(expectOneLine(once.stderr)).toContain('retry_on leaves out "status"')
    const bad = await task('--retry-on', 'sometimes')
    expect(bad.code).toBe(2)
    expect(expectOneLine(bad.stderr)).toContain('--retry-on takes unreachable, lost and status')
  })

  test('--no-retry makes one attempt; --task-timeout has the server give up with 504', async () => {
    const once = await task('--region', 'eu-west-1', '--fallback', 'none', '--no-retry')
    expect(once.code).toBe(1)
    expect(expectOneLine(once.stderr)).toContain('every attempt failed (1)')
    const startedMs = Date.now()
    const late = await task('--region', 'mars', '--task-timeout', '0.3')
    expect(late.code).toBe(1)
    expect(expectOneLine(late.stderr)).toContain("no answer within the task's timeout (0.3 s)")
    expect(Date.now() - startedMs).toBeLessThan(3000)
  })
})

describe('moonlight task queue flags', () => {
  test('--queue-timeout gives up on a full agent after S seconds; --priority high is served before a low task queued earlier', async () => {
    const queued = startTestServer({ queue: { timeout: 10 } })
    const held: string[] = []
    const agent = await startWsAgent(queued.wsUrl, {
      nodeId: 'one-slot',
      region: 'eu',
      register: { max_in_flight: 1 },
      answer: (_payload, taskId) => {
        held.push(taskId)
        return null
      },
    })
    const answer = (taskId: string) => agent.send({ type: 'task_response', payload: { task_id: taskId, response: { done: true } } })
    try {
      const first = postTask(queued.url, { region: 'eu', payload: 'first' })
      await waitFor(() => held.length === 1, 'the agent holds the first task')
      const gaveUp = await runMain(['task', '--server', queued.url, '--token', TOKEN, '--region', 'eu', '--payload', '"late"', '--queue-timeout', '0.3'])
      expect(gaveUp.code).toBe(1)
      expect(expectOneLine(gaveUp.stderr)).toContain('no slot freed within 0.3 s')
      expect(agent.received).toEqual(['first'])

      const low = postTask(queued.url, { region: 'eu', payload: 'low', priority: 'low' })
      await waitFor(
        async () => (await (await fetch(`${queued.url}/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()).queue?.depth === 1,
        'the low task waits',
      )
      const high = runMain(['task', '--server', queued.url, '--token', TOKEN, '--region', 'eu', '--payload', '"high"', '--priority', 'high'])
      await waitFor(
        async () => (await (await fetch(`${queued.url}/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()).queue?.depth === 2,
        'the high task waits',
      )
      answer(held[0]!)
      await waitFor(() => held.length === 2, 'the agent holds the next task')
      expect(agent.received[1]).toBe('high')
      answer(held[1]!)
      expect((await high).code).toBe(0)
      await waitFor(() => held.length === 3, 'the agent holds the low task')
      answer(held[2]!)
      expect([(await first).status, (await low).status]).toEqual([200, 200])

      const bad = await runMain(['task', '--server', queued.url, '--token', TOKEN, '--payload', '1', '--priority', 'urgent'])
      expect(bad.code).toBe(2)
      expect(expectOneLine(bad.stderr)).toContain('--priority must be high, normal or low')
    } finally {
      agent.close()
      await queued.stop()
    }
  })
})
