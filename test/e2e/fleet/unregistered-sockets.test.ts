import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import { openWs, postTask, SEED_CONFIG, startWsAgent, TOKEN, testScope, upgradeRequest, type WsPeer } from '../../support/helpers.ts'

const { defer, server } = testScope()

/** The socket's close, or "still open" if the server has not closed it within `boundMs`. */
function closedWithin(peer: WsPeer, boundMs: number): Promise<{ code: number; reason: string } | 'still open'> {
  return Promise.race([peer.closed, Bun.sleep(boundMs).then(() => 'still open' as const)])
}

async function monitorPeer(wsUrl: string): Promise<WsPeer> {
  const peer = await openWs(wsUrl)
  peer.send({ type: 'monitor', payload: { token: TOKEN } })
  await peer.next('monitor_ok')
  return peer
}

describe('sockets that never register', () => {
  test('a socket that only answers pings is closed with 1008 after ws.register_timeout; an agent and a monitor that joined in time stay', async () => {
    // Pings every 0.1 s: the idle socket's automatic pongs keep it alive for read_timeout, not for register_timeout.
    const mls = server({ ws: { register_timeout: 0.3, heartbeat_interval: 0.1 } })
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'prompt', region: 'usa' })
    const monitor = await monitorPeer(mls.wsUrl)
    defer(agent.close)
    defer(monitor.close)
    const idle = await openWs(mls.wsUrl)
    defer(idle.close)

    const reason = 'register within ws.register_timeout (0.3 s)'
    expect(await closedWithin(idle, 5000)).toEqual({ code: 1008, reason })
    expect(idle.messages).toEqual([{ type: 'error', payload: { message: reason, code: 'register_timeout' } }])
    // Both opened before the idle socket: had joining not counted, the sweep that closed it would have closed them too.
    expect([agent.socket.readyState, monitor.socket.readyState]).toEqual([WebSocket.OPEN, WebSocket.OPEN])
    const result = await postTask(mls.url, { region: 'usa', payload: 'still here' })
    expect([result.status, result.headers.get('x-moonlight-node')]).toEqual([200, 'prompt'])
  })

  test('a reloaded ws.register_timeout applies to the sockets already waiting', async () => {
    const mls = server({ ws: { register_timeout: 60 } })
    const idle = await openWs(mls.wsUrl)
    defer(idle.close)
    mls.server.reload(parseConfig({ ...SEED_CONFIG, ws: { ...SEED_CONFIG.ws, register_timeout: 0.2 } }, 'reloaded'))
    expect(await closedWithin(idle, 5000)).toEqual({ code: 1008, reason: 'register within ws.register_timeout (0.2 s)' })
  })

  test('past ws.max_unregistered an upgrade gets 503 too_many_unregistered; registering frees the slot, so agents still find room', async () => {
    const mls = server({ ws: { max_connections: 10, max_unregistered: 3 } })
    const idle = [await openWs(mls.wsUrl), await openWs(mls.wsUrl)]
    // The third socket registers at once: that gives its slot back.
    const first = await startWsAgent(mls.wsUrl, { nodeId: 'first', region: 'usa' })
    idle.push(await openWs(mls.wsUrl))
    for (const peer of [first, ...idle]) defer(peer.close)

    const refused = await upgradeRequest(mls.wsUrl)
    expect(refused.status).toBe(503)
    expect(await refused.json()).toEqual({
      error: 'too many WebSocket connections waiting to register (ws.max_unregistered = 3)',
      code: 'too_many_unregistered',
    })
    await expect(openWs(mls.wsUrl)).rejects.toThrow(/cannot connect/)

    // One idle socket goes (as register_timeout would make it): a real agent takes the slot and registers.
    idle[0]!.close()
    await idle[0]!.closed
    const second = await startWsAgent(mls.wsUrl, { nodeId: 'second', region: 'usa' })
    defer(second.close)
    expect(mls.server.registry.get('second')).toBeDefined()
    // Two idle sockets and two agents: one more idle socket fits, and then the cap holds again.
    idle.push(await openWs(mls.wsUrl))
    defer(idle[3]!.close)
    expect((await upgradeRequest(mls.wsUrl)).status).toBe(503)
  })
})
