/** The dashboards' live feed, attacked (a hostile pass); each test failed before its fix. */
import { describe, expect, test } from 'bun:test'
import { connect, type Socket } from 'node:net'
import { postJson, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()

/** One masked client text frame (RFC 6455), as a browser would send it. */
function textFrame(text: string): Buffer {
  const data = Buffer.from(text)
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78])
  const header = data.length < 126 ? Buffer.from([0x81, 0x80 | data.length]) : Buffer.from([0x81, 0x80 | 126, data.length >> 8, data.length & 0xff])
  return Buffer.concat([header, mask, Buffer.from(data.map((byte, at) => byte ^ mask[at % 4]!))])
}

/** A WebSocket over a raw TCP socket that reads the upgrade answer, then stops reading for good. */
async function neverReadingSocket(url: string): Promise<Socket> {
  const { port } = new URL(url)
  const socket = connect({ host: '127.0.0.1', port: Number(port) })
  defer(() => socket.destroy())
  await new Promise((resolve) => socket.once('connect', resolve))
  const upgraded = new Promise<string>((resolve) => {
    socket.once('data', (chunk) => {
      socket.pause()
      resolve(String(chunk))
    })
  })
  socket.write(
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  )
  expect(await upgraded).toStartWith('HTTP/1.1 101')
  return socket
}

async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1])
}

describe('a dashboard that stops reading', () => {
  test('is cut after ws.write_timeout, as an agent that stops reading is, instead of holding its send buffer', async () => {
    // read_timeout is long, so only write_timeout can end it in time.
    const mls = server({ ws: { write_timeout: 0.5, read_timeout: 300 } })
    // A fleet of 400 clients: each snapshot is a few hundred KB.
    for (let i = 0; i < 400; i++) {
      const heartbeat = await postJson(`${mls.url}/client/heartbeat`, {
        node_id: `node-${i}-${'n'.repeat(100)}`,
        token: TOKEN,
        region: `region-${i}-${'r'.repeat(100)}`,
        ip: '127.0.0.1',
        port: 10_000 + i,
      })
      expect(heartbeat.status).toBe(200)
    }
    const socket = await neverReadingSocket(mls.url)
    expect(await gauge(mls.url, 'moonlight_websocket_connections')).toBe(1)
    // "send monitor again at any time for a fresh snapshot": 300 snapshots, far past every socket buffer.
    for (let i = 0; i < 300; i++) socket.write(textFrame(JSON.stringify({ type: 'monitor', payload: { token: TOKEN } })))
    // Backpressure from the first snapshots on: gone within write_timeout (0.5 s), with a margin.
    await waitFor(async () => (await gauge(mls.url, 'moonlight_websocket_connections')) === 0, 'the server to cut the dashboard that does not read', 5000)
  })
})
