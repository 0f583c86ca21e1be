/** A node id belongs to whoever holds it: the hijacks that used to work, now refused, with the real agent still serving. */
import { describe, expect, test } from 'bun:test'
import { connect, type Socket } from 'node:net'
import { openWs, postJson, postTask, startHttpAgent, startWsAgent, type TestServer, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()
const OTHER_TOKEN = 'supersecrettokenox1'

/** A masked client text frame, written by hand. */
function textFrame(text: string): Buffer {
  const payload = Buffer.from(text)
  const mask = Buffer.from([1, 2, 3, 4])
  const header = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length]) : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff])
  return Buffer.concat([header, mask, Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!))])
}

/** A raw WebSocket peer that registers, then reads everything but never answers a ping: gone, as far as the server can tell. */
async function deafPeer(mls: TestServer, nodeId: string): Promise<{ socket: Socket; closeCode: Promise<number> }> {
  const url = new URL(mls.wsUrl)
  const socket = connect(Number(url.port), url.hostname)
  defer(() => socket.destroy())
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  socket.write(
    `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  )
  let received = Buffer.alloc(0)
  const closeCode = new Promise<number>((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk])
      // A close frame from the server: opcode 8, unmasked, the code in its first two payload bytes.
      const at = received.indexOf(0x88)
      if (at !== -1 && received.length >= at + 4) resolve(received.readUInt16BE(at + 2))
    })
  })
  await new Promise<void>((resolve) => socket.once('data', () => resolve()))
  socket.write(textFrame(JSON.stringify({ type: 'register', payload: { node_id: nodeId, token: TOKEN, region: 'usa' } })))
  await waitFor(() => mls.server.registry.get(nodeId) !== undefined, `${nodeId} to register`)
  return { socket, closeCode }
}

async function registerWs(mls: TestServer, nodeId: string, token = TOKEN) {
  const peer = await openWs(mls.wsUrl)
  defer(peer.close)
  peer.send({ type: 'register', payload: { node_id: nodeId, token, region: 'usa' } })
  return peer
}

describe('a node id belongs to the token that registered it', () => {
  test('another token cannot take a WebSocket node: 409 node_id_in_use, and the real agent keeps its tasks', async () => {
    const mls = server()
    const real = await startWsAgent(mls.wsUrl, { nodeId: 'worker-1', region: 'usa' })
    defer(real.close)
    const thief = await registerWs(mls, 'worker-1', OTHER_TOKEN)
    expect((await thief.next('error')).payload).toMatchObject({ code: 'node_id_in_use' })
    expect((await thief.closed).code).toBe(4009)
    const result = await postTask(mls.url, { region: 'usa', payload: 'still mine' })
    expect(result.headers.get('x-moonlight-node')).toBe('worker-1')
    expect(real.received).toEqual(['still mine'])
  })

  test('another token cannot take an HTTP node by heartbeat either', async () => {
    const mls = server()
    const real = await startHttpAgent(mls.url, { nodeId: 'http-1', region: 'usa' })
    defer(real.stop)
    const thief = await postJson(`${mls.url}/client/heartbeat`, { node_id: 'http-1', token: OTHER_TOKEN, region: 'usa', port: real.port + 1 })
    expect(thief.status).toBe(409)
    expect(thief.json()).toMatchObject({ code: 'node_id_in_use' })
    expect(thief.text).not.toContain(OTHER_TOKEN)
    expect(mls.server.registry.get('http-1')!.port).toBe(real.port)
  })

  test('the same token on a second connection is refused while the first still answers pings', async () => {
    const mls = server()
    const real = await startWsAgent(mls.wsUrl, { nodeId: 'twin', region: 'usa' })
    defer(real.close)
    const second = await registerWs(mls, 'twin')
    expect((await second.next('error', 5000)).payload).toMatchObject({ code: 'node_id_in_use', message: expect.any(String) })
    expect((await postTask(mls.url, { region: 'usa', payload: 1 })).status).toBe(200)
    expect(real.received).toEqual([1])
  })

  test('the same token takes over a connection that no longer answers; the old one is closed with 4000', async () => {
    const mls = server()
    const deaf = await deafPeer(mls, 'phoenix')
    const fresh = await startWsAgent(mls.wsUrl, { nodeId: 'phoenix', region: 'usa' })
    defer(fresh.close)
    expect(await deaf.closeCode).toBe(4000)
    expect((await postTask(mls.url, { region: 'usa', payload: 'x' })).status).toBe(200)
    expect(fresh.received).toEqual(['x'])
  })

  test('an HTTP node moves to a new address only after its old address missed its heartbeats', async () => {
    const mls = server({ client_ttl: 0.9 })
    const old = await startHttpAgent(mls.url, { nodeId: 'mover', region: 'usa' })
    defer(old.stop)
    const moved = await startHttpAgent(mls.url, { nodeId: 'mover-probe', region: 'usa' })
    defer(moved.stop)
    const claim = () => postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'mover', token: TOKEN, region: 'usa', port: moved.port })
    expect((await claim()).status).toBe(409)
    // Two heartbeats' worth of silence (2/3 of client_ttl) and the address is free to move.
    await Bun.sleep(700)
    expect((await claim()).status).toBe(200)
    expect(mls.server.registry.get('mover')!.port).toBe(moved.port)
  })
})
