/** Reloads while tasks wait and run, attacked (a hostile pass); each test failed before its fix. */
import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import { openWs, postJson, postTask, SEED_CONFIG, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()
const auth = { authorization: `Bearer ${TOKEN}` }

async function queueDepth(url: string): Promise<number | undefined> {
  return (await (await fetch(`${url}/status`, { headers: auth })).json()).queue?.depth
}

describe('a reload that revokes a token', () => {
  const LEAKED = 'leaked-agent-token-9'

  test('and moves the revoked agent under a pool with a waiting task: the task never goes to the revoked agent', async () => {
    // "pool" has one one-slot agent, busy; a task that may not leave "pool" (fallback none) waits for its slot.
    // "sub" is a root region at first, holding an agent registered with the token about to leak.
    const base = { ...SEED_CONFIG, tokens: [TOKEN, LEAKED], region_hierarchy: {} as Record<string, string> }
    const mls = server({ tokens: [TOKEN, LEAKED], region_hierarchy: {} })
    const { promise: held, resolve: release } = Promise.withResolvers<void>()
    defer(release)
    const busy = await startHttpAgent(mls.url, {
      nodeId: 'busy',
      region: 'pool',
      work: async (payload) => {
        await held
        return Response.json({ node: 'busy', echo: payload })
      },
    })
    defer(busy.stop)
    expect((await busy.heartbeat({ max_in_flight: 1 })).status).toBe(200)
    const leaked = await startHttpAgent(mls.url, { nodeId: 'leaked', region: 'sub', token: LEAKED })
    defer(leaked.stop)
    const first = postTask(mls.url, { region: 'pool', fallback: 'none', payload: 'first' })
    await waitFor(() => busy.received.length === 1, 'the busy agent holds its one task')
    const waiting = postTask(mls.url, { region: 'pool', fallback: 'none', payload: 'waiting', timeout: 10 })
    await waitFor(async () => (await queueDepth(mls.url)) === 1, 'one task waits for a slot in "pool"')

    // One reload: the leaked token goes, and "sub" is put under "pool".
    mls.server.reload(parseConfig({ ...base, tokens: [TOKEN], region_hierarchy: { sub: 'pool' } }, 'reloaded'))

    const clients = (await (await fetch(`${mls.url}/clients`, { headers: auth })).json()).clients
    expect(clients.map((client: { node_id: string }) => client.node_id)).toEqual(['busy'])
    release()
    const [firstDone, waited] = await Promise.all([first, waiting])
    expect(firstDone.json()).toEqual({ node: 'busy', echo: 'first' })
    // The revoked agent must get nothing: the waiting task is served by the busy agent's freed slot.
    expect(leaked.received).toEqual([])
    expect(waited.json()).toEqual({ node: 'busy', echo: 'waiting' })
  })
})

describe('reloads in a row', () => {
  test("more often than the periodic jobs' periods: client_ttl expiry, the end of an ejection and the dashboard's updates still happen", async () => {
    const mls = server({ client_ttl: 1 })
    const ejected = await startHttpAgent(mls.url, { nodeId: 'ejected', region: 'us-east-1' })
    defer(ejected.stop)
    const silent = await startHttpAgent(mls.url, { nodeId: 'silent', region: 'us-east-1' })
    defer(silent.stop)
    const dashboard = await openWs(mls.wsUrl)
    defer(dashboard.close)
    dashboard.send({ type: 'monitor', payload: { token: TOKEN } })
    await dashboard.next('monitor_ok')
    expect((await postJson(`${mls.url}/clients/ejected/eject`, { seconds: 0.3 }, auth)).status).toBe(200)
    const updatesBefore = dashboard.messages.length

    // A reload every 300 ms for 3 s (a config-sync loop sending SIGHUP); "ejected" keeps heartbeating, "silent" stopped.
    const until = Date.now() + 3000
    while (Date.now() < until) {
      expect((await ejected.heartbeat()).status).toBe(200)
      mls.server.reload(parseConfig({ ...SEED_CONFIG, client_ttl: 1 }, 'again'))
      await Bun.sleep(300)
    }

    const clients = (await (await fetch(`${mls.url}/clients`, { headers: auth })).json()).clients
    const states = Object.fromEntries(clients.map((client: { node_id: string; state: string }) => [client.node_id, client.state]))
    // Silent for 3 s with client_ttl 1: removed (the 1-second membership job).
    expect(states.silent).toBeUndefined()
    // Its 0.3 s ejection ended 2.7 s ago: on probation (the same job ends back-offs).
    expect(states.ejected).toBe('probation')
    // An update every 500 ms for as long as the socket is open (docs/dashboard.md).
    expect(dashboard.messages.slice(updatesBefore).filter((message) => message.type === 'update').length).toBeGreaterThanOrEqual(4)
  })
})
