/**
 * Two agents sharing a node_id — the original Moonlight's HTTP client defaults it to the host name,
 * so two machines cloned from one image share it. What happens, and how an operator sees it.
 */
import { describe, expect, test } from 'bun:test'
import { openWs, postTask, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { startOriginalHttpClient } from '../../support/original-clients.ts'

const { defer, server } = testScope()

async function clients(url: string, headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` }): Promise<any[]> {
  return ((await (await fetch(`${url}/clients`, { headers })).json()) as { clients: any[] }).clients
}

describe('two agents with one node_id', () => {
  test('two original HTTP clients (heartbeat every client_ttl / 6, as 15 s against 90 s): the first keeps the id, the other is refused every beat, and /clients says so', async () => {
    const mls = server({ client_ttl: 0.9 })
    const first = startOriginalHttpClient(mls.url, { nodeId: 'web', region: 'usa', intervalMs: 150 })
    defer(first.stop)
    await waitFor(() => first.statuses.includes(200), 'the first to register')
    const second = startOriginalHttpClient(mls.url, { nodeId: 'web', region: 'usa', intervalMs: 150 })
    defer(second.stop)
    await waitFor(() => second.statuses.length >= 8, 'eight heartbeats of the second')
    // Nobody is knocked off: the first holds the id throughout, every task goes to it.
    expect(new Set(first.statuses)).toEqual(new Set([200]))
    expect(new Set(second.statuses)).toEqual(new Set([409]))
    expect(mls.server.registry.get('web')!.port).toBe(first.port)
    expect((await postTask(mls.url, { region: 'usa', payload: { n: 1 } })).status).toBe(200)
    expect(first.received).toEqual(['{"n":1}'])
    expect(second.received).toEqual([])
    // The conflict, on the holder's row: who else claims the id, since when, how often.
    const [web] = await clients(mls.url)
    expect({ node_id: web.node_id, port: web.port, other_address: web.conflict?.other_address }).toEqual({
      node_id: 'web',
      port: first.port,
      other_address: `127.0.0.1:${second.port}`,
    })
    const { since, last_at, count } = web.conflict
    expect(count).toBeGreaterThanOrEqual(second.statuses.length - 1)
    expect(Date.parse(last_at)).toBeGreaterThan(Date.parse(since))
  })

  test('once the other agent stops claiming the id, the conflict is forgotten', async () => {
    const mls = server({ client_ttl: 0.9 })
    const holder = startOriginalHttpClient(mls.url, { nodeId: 'web', region: 'usa', intervalMs: 100 })
    defer(holder.stop)
    await waitFor(() => holder.statuses.includes(200), 'the holder to register')
    const other = startOriginalHttpClient(mls.url, { nodeId: 'web', region: 'usa', intervalMs: 100 })
    await waitFor(() => other.statuses.includes(409), 'a refusal')
    other.stop()
    expect((await clients(mls.url))[0].conflict).toBeDefined()
    // Forgotten after two client_ttl (1.8 s here) without a refused claim.
    await waitFor(async () => (await clients(mls.url))[0].conflict === undefined, 'the conflict to be forgotten', 5000)
  })

  test('a WebSocket agent refused for a live holder shows on the holder too, with its address', async () => {
    const mls = server()
    const holder = await startWsAgent(mls.wsUrl, { nodeId: 'twin', region: 'usa' })
    defer(holder.close)
    const twin = await openWs(mls.wsUrl)
    defer(twin.close)
    twin.send({ type: 'register', payload: { node_id: 'twin', token: TOKEN, region: 'usa' } })
    expect((await twin.next('error', 5000)).payload.code).toBe('node_id_in_use')
    const [view] = await clients(mls.url)
    expect(view.conflict).toMatchObject({ other_address: '127.0.0.1', count: 1 })
  })
})
