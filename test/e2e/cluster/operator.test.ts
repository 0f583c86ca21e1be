/**
 * Operator actions in a cluster (real Redis, `moonlight serve` instances): only the instance holding a
 * client acts on it; the others refuse with 409 held_elsewhere naming the holder, and a drain made at
 * the holder is seen cluster-wide.
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { postTask, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)
const ADMIN = { authorization: `Bearer ${TOKEN}` }

describe('operator actions in a cluster', () => {
  test('an action at A on the client B holds is 409 held_elsewhere naming B; a drain at B stops A sending there too', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    await wsAgent(b, { nodeId: 'b-held', region: 'us-east-1' })
    await waitFor(
      async () => (await getJson(`${a.url}/clients`)).clients.some((client: { node_id: string }) => client.node_id === 'b-held'),
      "A sees B's agent",
    )

    const refused = await fetch(`${a.url}/clients/b-held/drain`, { method: 'POST', headers: ADMIN })
    expect(refused.status).toBe(409)
    expect(await refused.json()).toMatchObject({ code: 'held_elsewhere', node_id: 'b-held', instance: 'b', error: expect.stringContaining('instance b') })
    expect((await postTask(a.url, { region: 'us-east-1', payload: 1 })).status).toBe(200)

    const drained = await fetch(`${b.url}/clients/b-held/drain`, { method: 'POST', headers: ADMIN })
    expect(drained.status).toBe(200)
    await waitFor(
      async () => (await getJson(`${a.url}/clients`)).clients.find((client: { node_id: string }) => client.node_id === 'b-held')?.draining === true,
      'A sees the drain',
    )
    const fromA = await postTask(a.url, { region: 'us-east-1', payload: 2 })
    expect([fromA.status, fromA.json().code]).toEqual([503, 'no_client'])
  }, 30_000)
})
