/**
 * Issue 21's killed instance: tasks at B relayed to a WebSocket agent held by A; A is killed with
 * SIGKILL while the agent holds them. The agent is still alive (it may finish them): by default B
 * retries each on another agent, so each runs twice; with retry_on ["unreachable"] each is sent
 * once and answered 502 naming "lost".
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { postTask, startHttpAgent, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

describe('retry_on in a cluster', () => {
  test('A killed while its WebSocket agent holds tasks relayed from B: default ones run again elsewhere, ["unreachable"] ones once', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b', { retry_count: 2 })
    // Holds every task, never answers: the agent outlives A and could still finish them.
    const held = await wsAgent(a, { nodeId: 'held', region: 'us-east-1', answer: () => null })
    // B's own agent, where a retry climbing from us-east-1 to usa lands.
    const other = await startHttpAgent(b.url, { nodeId: 'other', region: 'us-west-1' })
    defer(other.stop)
    await waitFor(async () => (await getJson(`${b.url}/clients`)).clients.some((client: { node_id: string }) => client.node_id === 'held'), 'B sees held')

    const count = 8
    const atMostOnce = Array.from({ length: count }, (_, i) => postTask(b.url, { region: 'us-east-1', payload: `once-${i}`, retry_on: ['unreachable'] }))
    const byDefault = Array.from({ length: count }, (_, i) => postTask(b.url, { region: 'us-east-1', payload: `default-${i}` }))
    await waitFor(() => held.received.length === 2 * count, 'the agent holds every task', 10_000)
    a.child.process.kill('SIGKILL')
    await a.child.exited

    const once = await Promise.all(atMostOnce)
    expect(once.map((answer) => [answer.status, answer.json().not_retried, answer.json().attempts.length])).toEqual(
      Array.from({ length: count }, () => [502, 'lost', 1]),
    )
    const retried = await Promise.all(byDefault)
    expect(retried.map((answer) => [answer.status, answer.headers.get('x-moonlight-node')])).toEqual(Array.from({ length: count }, () => [200, 'other']))
    // Each task reached the held agent exactly once; only the default ones reached another agent too.
    expect([...held.received].sort()).toEqual(
      [...Array.from({ length: count }, (_, i) => `default-${i}`), ...Array.from({ length: count }, (_, i) => `once-${i}`)].sort(),
    )
    expect([...other.received].sort()).toEqual(Array.from({ length: count }, (_, i) => `default-${i}`).sort())
  }, 40_000)
})
