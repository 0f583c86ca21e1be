/**
 * Large tasks and answers relayed through Redis (real redis-server with its default
 * client-output-buffer-limit, `moonlight serve` instances, a real WebSocket agent). The first is from
 * a hostile pass and failed before its fix; the second holds many large tasks relayed at once.
 */
import { describe, expect, test } from 'bun:test'
import { RedisClient } from 'bun'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { postTask, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

describe('large relayed answers', () => {
  test('a 40 MB answer within max_answer_bytes, from B to a caller at A: the caller gets it, A stays connected to Redis', async () => {
    const redis = await redisServer()
    // An operator's choice: answers up to 48 MiB (docs/configuration.md max_answer_bytes).
    const config = { task_timeout: 30, max_answer_bytes: 48 * 1024 * 1024, cluster: { instance_ttl: 5 } }
    const a = await instance(redis.url, 'a', config)
    const b = await instance(redis.url, 'b', config)
    const big = 'x'.repeat(40 * 1024 * 1024)
    const agent = await wsAgent(b, { nodeId: 'big-b', region: 'us-east-1', answer: (payload) => ({ response: { n: payload, big } }) })
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'big-b'), "A sees B's agent")

    const result = await postTask(a.url, { region: 'us-east-1', payload: 1 })
    const lost = a.child.output().includes('lost the connection')
    expect({
      status: result.status,
      length: result.text.length,
      instance: result.headers.get('x-moonlight-instance'),
      ranOnce: agent.received.length === 1,
      lost,
    }).toEqual({ status: 200, length: big.length + 16, instance: 'b', ranOnce: true, lost: false })
  }, 60_000)

  test('forty tasks of nearly max_body_bytes each, at once, from A to B (default limits): every one answered, neither instance cut from Redis', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 30 })
    const b = await instance(redis.url, 'b', { task_timeout: 30 })
    const agent = await wsAgent(b, { nodeId: 'bulk-b', region: 'us-east-1', answer: (payload) => ({ response: { length: String(payload).length } }) })
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'bulk-b'), "A sees B's agent")

    const payload = 'p'.repeat(1000 * 1000)
    const results = await Promise.all(Array.from({ length: 40 }, () => postTask(a.url, { region: 'us-east-1', payload })))
    expect({
      statuses: [...new Set(results.map((result) => result.status))],
      bodies: [...new Set(results.map((result) => result.text))],
      received: agent.received.length,
      lost: [a, b].filter((at) => at.child.output().includes('lost the connection')).map((at) => at.id),
    }).toEqual({ statuses: [200], bodies: ['{"length":1000000}'], received: 40, lost: [] })
  }, 60_000)

  test('an answer spilled in parts comes back byte for byte, multi-byte characters across the parts included, and leaves no key behind', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    // About 1.2 M UTF-16 units: five parts, with surrogate pairs at every offset.
    const text = 'é🙂x'.repeat(300_000)
    await wsAgent(b, { nodeId: 'text-b', region: 'us-east-1', answer: () => ({ response: { text } }) })
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'text-b'), "A sees B's agent")
    const result = await postTask(a.url, { region: 'us-east-1', payload: 1 })
    const client = new RedisClient(redis.url)
    defer(() => client.close())
    expect({ status: result.status, same: result.text === JSON.stringify({ text }), left: await client.send('KEYS', ['mls:spill:*']) }).toEqual({
      status: 200,
      same: true,
      left: [],
    })
  }, 60_000)
})
