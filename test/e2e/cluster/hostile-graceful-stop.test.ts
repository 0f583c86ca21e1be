/**
 * Hostile pass: a graceful stop (SIGTERM) of the instance holding the agent of a relayed task (real
 * redis-server, `moonlight serve` instances, real WebSocket agents).
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { postTask, testScope, type WsAgent, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

describe('SIGTERM of the holder', () => {
  test('a task relayed to B before its SIGTERM is finished by B within its grace period and answered once, not run again elsewhere', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 20 })
    const b = await instance(redis.url, 'b', { task_timeout: 20, cluster: { instance_ttl: 5 } })
    const late: Array<ReturnType<typeof setTimeout>> = []
    defer(() => late.forEach(clearTimeout))
    // B's agent takes 2 s per task.
    const worker: WsAgent = await wsAgent(b, {
      nodeId: 'worker-b',
      region: 'us-east-1',
      answer: (payload, taskId) => {
        late.push(setTimeout(() => worker.send({ type: 'task_response', payload: { task_id: taskId, response: { did: payload } } }), 2000))
        return null
      },
    })
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
})
