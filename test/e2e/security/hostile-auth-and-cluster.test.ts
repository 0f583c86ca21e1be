/**
 * A hostile pass on authentication and roles, and on what one cluster instance accepts from another
 * over Redis. Real servers on free ports, real redis-server, real agents and callers.
 */
import { describe, expect, test } from 'bun:test'
import { RedisClient } from 'bun'
import { parseConfig } from '../../../src/config/config.ts'
import { clusterScope } from '../../support/cluster.ts'
import { openWs, postTask, SEED_CONFIG, startHttpAgent, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

/** A plain Redis connection, as a peer (or a buggy peer of another version) would write to the channels. */
async function redisPeer(url: string): Promise<RedisClient> {
  const redis = new RedisClient(url)
  await redis.connect()
  defer(() => redis.close())
  return redis
}

async function clientIds(url: string): Promise<unknown[]> {
  const response = await fetch(`${url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } }).catch(() => undefined)
  return response?.status === 200 ? (await response.json()).clients.map((client: { node_id: unknown }) => client.node_id) : []
}

describe('cluster messages over Redis', () => {
  test('malformed fleet, relay and reply messages neither end an instance nor enter its fleet; relaying still works after them', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    await wsAgent(b, { nodeId: 'worker', region: 'us-east-1' })
    const peer = await redisPeer(redis.url)
    const messages: Array<[string, string]> = [
      // Valid JSON, but not an object: each of these ended the instance with a TypeError.
      ['mls:fleet', 'null'],
      ['mls:reply:a', 'null'],
      ['mls:relay:a', 'null'],
      // A set without its client, or with a client of the wrong shape.
      ['mls:fleet', '{"instance":"x","op":"set"}'],
      ['mls:fleet', '{"instance":"x","op":"set","client":null}'],
      [
        'mls:fleet',
        '{"instance":"x","op":"set","client":{"node_id":5,"region":7,"protocol":"ws","ip":"1.2.3.4","port":"x","scheme":"http","weight":"heavy","holder":"h","state":"bogus"}}',
      ],
      ['mls:fleet', '{"instance":"x","op":"set","client":{"node_id":"half-a-record"}}'],
      // Not JSON at all, an unknown op, and an answer to a task a never relayed.
      ['mls:fleet', 'not json'],
      ['mls:fleet', '{"instance":"x","op":"explode"}'],
      ['mls:reply:a', '{"key":"a/999999","status":200,"body":"forged"}'],
      ['mls:relay:a', '{}'],
    ]
    for (const [channel, message] of messages) await peer.send('PUBLISH', [channel, message])
    // Then a well-formed record of a live instance: once A lists it, A has read every message before it.
    // A whole presence record: one that is not (instanceInfoSchema) is no instance, and A's next refresh would drop the marker with it.
    const now = new Date().toISOString()
    const ghost = { instance_id: 'ghost', incarnation: 'g', advertise_url: '', started_at: now, clients: 1, in_flight: 0, refreshed_at: now }
    await peer.send('SET', ['mls:instance:ghost', JSON.stringify(ghost), 'PX', '30000'])
    const marker = { node_id: 'marker', region: 'asia', protocol: 'ws', ip: '10.0.0.9', port: 3000, scheme: 'http', weight: 1, holder: 'h', state: 'healthy' }
    await peer.send('PUBLISH', ['mls:fleet', JSON.stringify({ instance: 'ghost', op: 'set', client: marker })])
    await waitFor(async () => a.child.process.exitCode !== null || (await clientIds(a.url)).includes('marker'), 'A lists the marker')

    // Each instance still answers, lists only the real agent, and a task at A still reaches B's agent.
    const answer = await postTask(a.url, { region: 'us-east-1', payload: { n: 1 } })
    expect([a.child.process.exitCode, answer.status, answer.json(), answer.headers.get('x-moonlight-instance')]).toEqual([
      null,
      200,
      { node: 'worker', echo: { n: 1 } },
      'b',
    ])
    expect((await clientIds(a.url)).sort()).toEqual(['marker', 'worker'])
  }, 30_000)
})

describe('tokens compared exactly', () => {
  test("a token's prefix, case variant or extension is refused in every way a token is sent, and counted as a failed authentication", async () => {
    const mls = server({ html: { enabled: false }, auth: { max_failures: 1000 } })
    const variants = [TOKEN.slice(0, -1), TOKEN.toUpperCase(), `${TOKEN}x`, ` ${TOKEN.slice(1)}`]
    const statuses: number[] = []
    for (const variant of variants) {
      const ways: Array<Record<string, string>> = [{ authorization: `Bearer ${variant}` }, { authorization: variant }, { 'x-token': variant }]
      for (const headers of ways) {
        statuses.push((await fetch(`${mls.url}/clients`, { headers })).status)
      }
      // The WebSocket URL's token, for a register without one.
      const peer = await openWs(`${mls.wsUrl}?token=${encodeURIComponent(variant)}`)
      defer(peer.close)
      peer.send({ type: 'register', payload: { node_id: 'guess', region: 'usa', port: 3000 } })
      expect([(await peer.next('error')).payload.code, (await peer.closed).code]).toEqual(['invalid_token', 1008])
    }
    expect(statuses).toEqual(Array(12).fill(401))
    const metrics = await (await fetch(`${mls.url}/metrics`)).text()
    const failures = Number(/^moonlight_auth_failures_total (\d+)/m.exec(metrics)?.[1])
    expect(failures).toBe(12 + 4)
    // The token itself still works.
    expect((await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200)
  })
})

describe('a token revoked by a reload', () => {
  const FLEET = 'fleet-agent-token-1'
  const OTHER = 'other-agent-token-2'
  const WATCHER = 'dashboard-token-3'

  test("ends what it let in at once — WebSocket and HTTP agents, a dashboard — while other tokens' stay", async () => {
    const access = [
      { token: FLEET, roles: ['agent' as const] },
      { token: OTHER, roles: ['agent' as const] },
      { token: WATCHER, roles: ['monitor' as const] },
    ]
    const config = { ...SEED_CONFIG, html: { ...SEED_CONFIG.html, enabled: false } }
    const mls = server({ access, html: { enabled: false } })
    const revoked = await startWsAgent(mls.wsUrl, { nodeId: 'revoked-ws', region: 'us-east-1', token: FLEET })
    defer(revoked.close)
    const revokedHttp = await startHttpAgent(mls.url, { nodeId: 'revoked-http', region: 'us-east-1', token: FLEET })
    defer(revokedHttp.stop)
    const kept = await startWsAgent(mls.wsUrl, { nodeId: 'kept', region: 'europe', token: OTHER })
    defer(kept.close)
    const dashboard = await openWs(mls.wsUrl)
    defer(() => dashboard.close())
    dashboard.send({ type: 'monitor', payload: { token: WATCHER } })
    expect((await dashboard.next('monitor_ok')).type).toBe('monitor_ok')
    const keptDashboard = await openWs(mls.wsUrl)
    defer(() => keptDashboard.close())
    keptDashboard.send({ type: 'monitor', payload: { token: TOKEN } })
    expect((await keptDashboard.next('monitor_ok')).type).toBe('monitor_ok')

    // FLEET leaked, and WATCHER is retired: the operator removes both and reloads.
    mls.server.reload(parseConfig({ ...config, access: [access[1]] }, 'reloaded'))

    const clients = await (await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()
    expect(clients.clients.map((client: { node_id: string }) => client.node_id)).toEqual(['kept'])
    // A task for the revoked agents' region climbs the hierarchy to the one agent left.
    const answered = await postTask(mls.url, { region: 'us-east-1', payload: 1 })
    expect(answered.json()).toEqual({ node: 'kept', echo: 1 })
    expect([revoked.received, revokedHttp.received]).toEqual([[], []])
    // The revoked sockets close as a refused token's do: an agent must not wait for tasks that never come.
    expect(await revoked.closed).toEqual({ code: 1008, reason: 'token revoked' })
    expect(await dashboard.closed).toEqual({ code: 1008, reason: 'token revoked' })
    expect(keptDashboard.socket.readyState).toBe(WebSocket.OPEN)
  })
})
