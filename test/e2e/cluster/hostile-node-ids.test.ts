/**
 * Hostile pass: one node id claimed on two instances of a cluster (real redis-server, `moonlight serve`
 * instances, real WebSocket agents).
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson, type Instance } from '../../support/cluster.ts'
import { openWs, postTask, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

const listed = async (at: Instance): Promise<string[]> =>
  (await getJson(`${at.url}/clients`)).clients.map((client: { node_id: string; instance: string }) => `${client.node_id}@${client.instance}`).sort()

/** Instances A, B and C of one cluster, A holding the live WebSocket agent gpu-1, which B and C list. */
async function threeWithGpuAtA(): Promise<{ a: Instance; b: Instance; c: Instance }> {
  const redis = await redisServer()
  const a = await instance(redis.url, 'a')
  const b = await instance(redis.url, 'b')
  const c = await instance(redis.url, 'c')
  await wsAgent(a, { nodeId: 'gpu-1', region: 'us-east-1' })
  for (const at of [b, c]) await waitFor(async () => (await listed(at)).join() === 'gpu-1@a', `${at.id} sees A's gpu-1`)
  return { a, b, c }
}

describe('one node id, two instances', () => {
  test('a second live agent registering a node id that a live agent holds at another instance is refused 409 node_id_in_use', async () => {
    const { b } = await threeWithGpuAtA()

    // Another live agent, same token and node id, at B.
    const twin = await openWs(b.wsUrl)
    defer(twin.close)
    twin.send({ type: 'register', payload: { node_id: 'gpu-1', token: TOKEN, region: 'us-east-1' } })
    const answer = await twin.next(undefined, 5000)
    // docs/security.md: "two live agents with one id do not knock each other off: the first keeps it and
    // gets every task, the second is refused at each heartbeat or register".
    expect([answer.type, answer.payload?.code]).toEqual(['error', 'node_id_in_use'])
  }, 30_000)

  test('a twin of a live agent that comes and goes at another instance leaves the live agent listed and reachable on every instance', async () => {
    const { a, b, c } = await threeWithGpuAtA()

    // A misconfigured twin (same token, same node id) connects at B for a moment, then goes.
    const twin = await openWs(b.wsUrl)
    twin.send({ type: 'register', payload: { node_id: 'gpu-1', token: TOKEN, region: 'us-east-1' } })
    await twin.next(undefined, 5000)
    await Bun.sleep(500)
    twin.close()
    await twin.closed
    // Several instance_ttl (1 s) and refreshes later:
    await Bun.sleep(5000)

    // A's agent never left: every instance still lists it as A's, and a task at C reaches it.
    const views = { a: await listed(a), b: await listed(b), c: await listed(c) }
    const atC = await postTask(c.url, { region: 'us-east-1', payload: 'for gpu-1' })
    expect({ views, atC: [atC.status, atC.headers.get('x-moonlight-node')] }).toEqual({
      views: { a: ['gpu-1@a'], b: ['gpu-1@a'], c: ['gpu-1@a'] },
      atC: [200, 'gpu-1'],
    })
  }, 30_000)
})
