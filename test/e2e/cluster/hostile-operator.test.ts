/**
 * Operator actions in a cluster, by the wrong instance and the wrong people, while tasks are relayed
 * (real Redis, `moonlight serve` instances): the holder's action is the cluster's, the others refuse
 * with 409 held_elsewhere, and every count returns to zero on both sides.
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson, type Instance } from '../../support/cluster.ts'
import { postTask, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)
const MONITOR_ONLY = 'cluster-monitor-only-0123456789'
const ACCESS = { access: [{ token: MONITOR_ONLY, roles: ['monitor'] }] }

async function act(at: Instance, path: string, method = 'POST', token = TOKEN, body?: unknown) {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(`${at.url}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  return { status: response.status, body: (await response.json()) as any }
}

/** One client as `at` lists it. */
async function seen(at: Instance, nodeId: string): Promise<any> {
  return (await getJson(`${at.url}/clients`)).clients.find((client: { node_id: string }) => client.node_id === nodeId)
}

describe('operator actions in a cluster, hostile', () => {
  test('an eject at the holder takes the agent out at every instance: the others send it nothing, relayed or direct', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    const ws = await wsAgent(b, { nodeId: 'b-ws', region: 'us-east-1' })
    const http = await startHttpAgent(b.url, { nodeId: 'b-http', region: 'eu-west-1' })
    defer(http.stop)
    await waitFor(async () => (await seen(a, 'b-ws')) !== undefined && (await seen(a, 'b-http')) !== undefined, "A sees B's agents")

    for (const nodeId of ['b-ws', 'b-http']) {
      const elsewhere = await act(a, `/clients/${nodeId}/eject`, 'POST', TOKEN, { seconds: 60 })
      expect([elsewhere.status, elsewhere.body.code, elsewhere.body.instance]).toEqual([409, 'held_elsewhere', 'b'])
      expect((await act(b, `/clients/${nodeId}/eject`, 'POST', TOKEN, { seconds: 60 })).body.client.state).toBe('ejected')
    }
    await waitFor(async () => (await seen(a, 'b-ws')).holder_state === 'ejected' && (await seen(a, 'b-http')).holder_state === 'ejected', 'A hears of it')
    const fromA = [
      await postTask(a.url, { region: 'us-east-1', payload: 1, fallback: 'none' }),
      await postTask(a.url, { region: 'eu-west-1', payload: 2, fallback: 'none' }),
      await postTask(a.url, { node_id: 'b-ws', payload: 3 }),
      await postTask(a.url, { node_id: 'b-http', payload: 4 }),
    ]
    expect(fromA.map((result) => [result.status, result.json().code])).toEqual([
      [503, 'no_client'],
      [503, 'no_client'],
      [503, 'node_unavailable'],
      [503, 'node_unavailable'],
    ])
    expect([ws.received, http.received]).toEqual([[], []])
    expect(await seen(a, 'b-ws')).toMatchObject({ state: 'ejected', holder_state: 'ejected' })
  }, 40_000)

  test('forget at the holder while the other instance relays to the agent: every relayed task is answered, and both instances count nothing left', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', ACCESS)
    const b = await instance(redis.url, 'b', ACCESS)
    const agent = await wsAgent(b, {
      nodeId: 'b-busy',
      region: 'us-east-1',
      register: { max_in_flight: 1 },
      // Holds every task: the one running keeps the agent's one slot.
      answer: () => null,
    })
    await waitFor(async () => (await seen(a, 'b-busy')) !== undefined, "A sees B's agent")
    // Nobody but an admin at the holder acts: a monitor token is refused at either instance, before the holder is named.
    for (const at of [a, b]) {
      const refused = await act(at, '/clients/b-busy', 'DELETE', MONITOR_ONLY)
      expect([refused.status, refused.body.code, refused.body.role]).toEqual([403, 'forbidden', 'admin'])
    }
    // One task in flight on the agent's one slot, relayed from A; one from A waiting at B, one from B waiting for it by name.
    const running = postTask(a.url, { node_id: 'b-busy', payload: 'running', retry_on: ['unreachable'] })
    await waitFor(() => agent.received.length === 1, 'the relayed task on the agent')
    const waitingFromA = postTask(a.url, { node_id: 'b-busy', payload: 'queued-a', queue_timeout: 20 })
    const waitingAtB = postTask(b.url, { node_id: 'b-busy', payload: 'queued-b', queue_timeout: 20 })
    await waitFor(async () => (await getJson(`${b.url}/status`)).queue.depth >= 1, 'a task waiting at B')
    expect((await act(a, '/clients/b-busy', 'DELETE')).body.code).toBe('held_elsewhere')
    expect((await act(b, '/clients/b-busy', 'DELETE')).body).toEqual({ forgotten: 'b-busy' })
    expect((await agent.closed).code).toBe(4003)
    const [first, fromA, fromB] = await Promise.all([running, waitingFromA, waitingAtB])
    // The running one was sent: with retry_on ["unreachable"] it is not sent again, and says so.
    expect([first.status, first.json().code]).toEqual([502, 'all_attempts_failed'])
    // Waiting at A or relayed to wait at B, it is answered as soon as the agent is gone, not at its queue_timeout.
    expect(['unknown_node', 'node_unavailable', 'all_attempts_failed']).toContain(fromA.json().code)
    expect([fromB.status, fromB.json().code]).toEqual([404, 'unknown_node'])
    expect(agent.received).toEqual(['running'])
    await waitFor(async () => (await seen(a, 'b-busy')) === undefined, 'A forgets it too')
    for (const at of [a, b]) {
      const status = await getJson(`${at.url}/status`)
      expect([at.id, status.tasks, status.queue.depth, status.clients]).toEqual([at.id, 0, 0, 0])
    }
  }, 40_000)
})
