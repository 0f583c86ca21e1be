/**
 * Hostile pass: an instance killed and started again under its instance_id before the others noticed
 * it was gone (real redis-server, `moonlight serve` instances, real WebSocket agents).
 */
import { describe, expect, test } from 'bun:test'
import { RedisClient } from 'bun'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { postTask, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

describe('an instance back under its id', () => {
  test('kill -9 of B and B started again before A looked: the task A had relayed to the dead B fails over at once, not after task_timeout', async () => {
    const redis = await redisServer()
    const raw = new RedisClient(redis.url)
    defer(() => raw.close())
    const taskTimeoutS = 20
    // A: its own presence outlives a pause of a few seconds, and Redis may be slow to answer it for as long.
    const a = await instance(redis.url, 'a', { task_timeout: taskTimeoutS, cluster: { instance_ttl: 30, command_timeout: 10 } })
    const bConfig = { task_timeout: taskTimeoutS }
    const b1 = await instance(redis.url, 'b', bConfig)
    // B's agent takes the task and never answers it.
    const slow = await wsAgent(b1, { nodeId: 'slow-b', region: 'us-east-1', answer: () => null })
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'slow-b'), "A sees B's agent")
    const startedAt = Date.now()
    const call = postTask(a.url, { region: 'us-east-1', payload: 'relayed to the first B' })
    call.catch(() => undefined)
    await waitFor(() => slow.received.length === 1, 'the task at B')
    const rescuer = await wsAgent(a, { nodeId: 'rescuer-a', region: 'us-east-1' })

    // A does not look at the cluster for a moment (a stall of its event loop: a GC pause, a starved container)…
    process.kill(a.child.process.pid, 'SIGSTOP')
    defer(() => process.kill(a.child.process.pid, 'SIGCONT'))
    // …while B is killed and, once its presence has expired, started again under its id.
    b1.child.process.kill('SIGKILL')
    await b1.child.exited
    await waitFor(async () => (await raw.send('EXISTS', ['mls:instance:b'])) === 0, "B's presence to expire", 5000)
    await instance(redis.url, 'b', bConfig)
    process.kill(a.child.process.pid, 'SIGCONT')

    const result = await call
    const elapsedMs = Date.now() - startedAt
    // docs/cluster.md: "the tasks they had relayed to it fail over at once to another agent ... not after task_timeout".
    expect({ status: result.status, node: result.headers.get('x-moonlight-node'), fast: elapsedMs < (taskTimeoutS * 1000) / 2 }).toEqual({
      status: 200,
      node: 'rescuer-a',
      fast: true,
    })
    expect(rescuer.received).toEqual(['relayed to the first B'])
  }, 40_000)
})
