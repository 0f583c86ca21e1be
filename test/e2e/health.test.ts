import { describe, expect, test } from 'bun:test'
import { connect, type Socket } from 'node:net'
import { postTask, startHttpAgent, startWsAgent, TOKEN, waitFor, testScope, type TestServer } from '../helpers.ts'

const { defer, server } = testScope()

/** A masked client text frame, written by hand: this peer must be able to go silent, which WebSocket clients never do. */
function textFrame(text: string): Buffer {
  const payload = Buffer.from(text)
  const mask = Buffer.from([1, 2, 3, 4])
  const length = payload.length
  const header = length < 126 ? Buffer.from([0x81, 0x80 | length]) : Buffer.from([0x81, 0x80 | 126, length >> 8, length & 0xff])
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!))
  return Buffer.concat([header, mask, masked])
}

/** A raw TCP WebSocket peer that registers and then neither reads nor answers pings. */
async function silentPeer(mls: TestServer, nodeId: string, weight = 1): Promise<Socket> {
  const url = new URL(mls.wsUrl)
  const socket = connect(Number(url.port), url.hostname)
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  socket.write(
    `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  )
  await new Promise<void>((resolve) => socket.once('data', () => resolve()))
  socket.write(textFrame(JSON.stringify({ type: 'register', payload: { node_id: nodeId, token: TOKEN, region: 'usa', port: 1, weight } })))
  await waitFor(() => mls.server.registry.get(nodeId) !== undefined, `${nodeId} to register`)
  // From here on it reads nothing: the kernel buffers fill and pings go unanswered.
  socket.pause()
  defer(() => socket.destroy())
  return socket
}

describe('health checks', () => {
  test('an HTTP client with no heartbeat for client_ttl is removed', async () => {
    const mls = server({ client_ttl: 0.5 })
    const agent = await startHttpAgent(mls.url, { nodeId: 'quiet', region: 'usa' })
    defer(agent.stop)
    expect(mls.server.registry.get('quiet')).toBeDefined()
    await waitFor(() => mls.server.registry.get('quiet') === undefined, 'the TTL to expire', 5000)
    expect((await postTask(mls.url, { region: 'usa', payload: 1 })).status).toBe(503)
    // Heartbeating again brings it back.
    expect((await agent.heartbeat()).status).toBe(200)
    expect((await postTask(mls.url, { region: 'usa', payload: 1 })).status).toBe(200)
  })

  test('a WebSocket client silent past read_timeout is dropped; one that answers pings stays', async () => {
    const mls = server({ ws: { heartbeat_interval: 0.1, read_timeout: 0.5, connection_check_interval: 0.1 } })
    const lively = await startWsAgent(mls.wsUrl, { nodeId: 'lively', region: 'usa' })
    defer(lively.close)
    await silentPeer(mls, 'mute')
    await waitFor(() => mls.server.registry.get('mute') === undefined, 'the silent peer to be dropped', 5000)
    // The live one answered every ping in the meantime, so it is still there and serving.
    expect(mls.server.registry.get('lively')).toBeDefined()
    expect((await postTask(mls.url, { region: 'usa', payload: 'still here' })).headers.get('x-moonlight-node')).toBe('lively')
  })

  test('a WebSocket client that stops reading is cut after write_timeout and its tasks fail over', async () => {
    const mls = server({ max_body_bytes: 8 * 1024 * 1024, task_timeout: 30, retry_count: 3, ws: { write_timeout: 0.5, read_timeout: 300 } })
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'usa', weight: 1, work: () => Response.json({ by: 'good' }) })
    defer(good.stop)
    await silentPeer(mls, 'stalled', 1000)
    const big = 'z'.repeat(2 * 1024 * 1024)
    // Enough data to fill the socket buffers: the sends queue up and the write timer starts.
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => postTask(mls.url, { region: 'usa', payload: { i, big } })))
    for (const result of results) {
      expect(result.status).toBe(200)
      expect(result.json()).toEqual({ by: 'good' })
    }
    expect(results.some((result) => result.headers.get('x-moonlight-attempts') === '2')).toBe(true)
    expect(mls.server.registry.get('stalled')).toBeUndefined()
  })
})
