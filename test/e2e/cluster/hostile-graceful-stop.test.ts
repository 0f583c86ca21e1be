/**
 * Hostile pass: a graceful stop (SIGTERM) of the instance holding the agent of a relayed task (real
 * redis-server, `moonlight serve` instances, real WebSocket agents).
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson, type Instance } from '../../support/cluster.ts'
import { postTask, testScope, type WsAgent, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

/** A WebSocket agent at `at` that answers each task `delayMs` after it came, with `{did: payload}` (its timers cleared after the test). */
async function slowAgent(at: Instance, nodeId: string, delayMs: number): Promise<WsAgent> {
  const late: Array<ReturnType<typeof setTimeout>> = []
  defer(() => late.forEach(clearTimeout))
  const agent: WsAgent = await wsAgent(at, {
    nodeId,
    region: 'us-east-1',
    answer: (payload, taskId) => {
      late.push(setTimeout(() => agent.send({ type: 'task_response', payload: { task_id: taskId, response: { did: payload } } }), delayMs))
      return null
    },
  })
  return agent
}

describe('SIGTERM of the holder', () => {
  test('a task relayed to B before its SIGTERM is finished by B within its grace period and answered once, not run again elsewhere', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 20 })
    const b = await instance(redis.url, 'b', { task_timeout: 20, cluster: { instance_ttl: 5 } })
    // B's agent takes 2 s per task.
    const worker = await slowAgent(b, 'worker-b', 2000)
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'worker-b'), "A sees B's agent")
    const call = postTask(a.url, { region: 'us-east-1', payload: 'charge card 42' })
    call.catch(() => undefined)
    await waitFor(() => worker.received.length === 1, 'the task at B')
    const other = await wsAgent(a, { nodeId: 'other-a', region: 'us-east-1' })

    // docs/cluster.md: stopped with SIGTERM, B "finishes what it holds within the grace period".
    b.child.process.kill('SIGTERM')
    const result = await call
    expect({ status: result.status, node: result.headers.get('x-moonlight-node'), body: result.text, rerun: other.received }).toEqual({
      status: 200,
      node: 'worker-b',
      body: '{"did":"charge card 42"}',
      rerun: [],
    })
  }, 40_000)

  test("a relayed task still running when B's grace period ends fails over at A (lost), not answered a timeout", async () => {
    const redis = await redisServer()
    // B's grace period is min(task_timeout, 10 s) = 3 s; A's caller has 30 s.
    const a = await instance(redis.url, 'a', { task_timeout: 30 })
    const b = await instance(redis.url, 'b', { task_timeout: 3, cluster: { instance_ttl: 5 } })
    const worker = await slowAgent(b, 'worker-b', 6000)
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'worker-b'), "A sees B's agent")
    const call = postTask(a.url, { region: 'us-east-1', payload: 'long job', retry_on: ['unreachable', 'lost'] })
    call.catch(() => undefined)
    await waitFor(() => worker.received.length === 1, 'the task at B')
    const other = await wsAgent(a, { nodeId: 'other-a', region: 'us-east-1' })

    b.child.process.kill('SIGTERM')
    const result = await call
    // Its caller allowed a retry after a lost attempt: it gets the answer of A's agent.
    expect({ status: result.status, node: result.headers.get('x-moonlight-node'), rerun: other.received.length }).toEqual({
      status: 200,
      node: 'other-a',
      rerun: 1,
    })
  }, 40_000)

  test("a broadcast relayed to two of B's agents before its SIGTERM: B waits for both within its grace period", async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 30 })
    const b = await instance(redis.url, 'b', { task_timeout: 10, cluster: { instance_ttl: 5 } })
    const slow = await slowAgent(b, 'slow-b', 3000)
    const fast = await slowAgent(b, 'fast-b', 500)
    await waitFor(
      async () => (await getJson(`${a.url}/clients`)).clients.filter((c: { instance?: string }) => c.instance === 'b').length === 2,
      "A sees both of B's agents",
    )
    const call = postTask(a.url, { region: 'us-east-1', payload: 'to all', mode: 'broadcast' })
    call.catch(() => undefined)
    await waitFor(() => slow.received.length === 1 && fast.received.length === 1, 'the broadcast at both')

    b.child.process.kill('SIGTERM')
    const result = await call
    const parts = result
      .json()
      .results.map((part: { node_id: string; status: number }) => [part.node_id, part.status])
      .sort()
    expect({ status: result.status, answered: result.json().answered, parts }).toEqual({
      status: 200,
      answered: 2,
      parts: [
        ['fast-b', 200],
        ['slow-b', 200],
      ],
    })
  }, 40_000)
})
