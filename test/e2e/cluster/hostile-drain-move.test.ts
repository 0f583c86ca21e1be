/**
 * Hostile pass: an operator's drain in a cluster, when the drained agent moves to another instance
 * (real redis-server, `moonlight serve` instances, real WebSocket agents).
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson, type Instance } from '../../support/cluster.ts'
import { postTask, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)
const ADMIN = { authorization: `Bearer ${TOKEN}` }

const view = async (at: Instance, nodeId: string) =>
  (await getJson(`${at.url}/clients`)).clients.find((client: { node_id: string }) => client.node_id === nodeId)

describe('a drain in a cluster', () => {
  test('an agent drained at its holder that reconnects to another instance (moonlight agent --server B,A) stays drained: it gets no task', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    const first = await wsAgent(b, { nodeId: 'maint-1', region: 'us-east-1' })
    await waitFor(async () => (await view(a, 'maint-1'))?.instance === 'b', "A sees B's agent")
    const drained = await fetch(`${b.url}/clients/maint-1/drain`, { method: 'POST', headers: ADMIN })
    expect(drained.status).toBe(200)
    await waitFor(async () => (await view(a, 'maint-1'))?.draining === true, 'A sees the drain')

    // Its connection to B drops; the agent moves on to the next server of its list, A.
    first.close()
    await first.closed
    await waitFor(async () => (await view(a, 'maint-1')) === undefined, 'B withdrew it')
    const moved = await wsAgent(a, { nodeId: 'maint-1', region: 'us-east-1' })

    // docs/http-api.md: a drain "lasts across the agent's heartbeats and reconnects ... until undrain".
    const task = await postTask(a.url, { region: 'us-east-1', payload: 'during maintenance' })
    expect({
      status: task.status,
      code: task.status === 200 ? undefined : task.json().code,
      received: moved.received,
      draining: (await view(a, 'maint-1'))?.draining,
    }).toEqual({
      status: 503,
      code: 'no_client',
      received: [],
      draining: true,
    })
  }, 30_000)
})
