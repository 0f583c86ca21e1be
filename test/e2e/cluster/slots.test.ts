/**
 * Agent slots in a cluster (issue 24): a WebSocket agent's slots are exact however many instances
 * send it tasks (its holder alone counts them and tells the others when it is full); an HTTP agent
 * that every instance calls gets a share of its slots per instance.
 */
import { describe, expect, test } from 'bun:test'
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
})
