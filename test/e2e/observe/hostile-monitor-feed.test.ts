/** The dashboards' live feed, attacked (a hostile pass); each test failed before its fix. */
import { describe, expect, test } from 'bun:test'
import { connect, type Socket } from 'node:net'
import { metricSample, openWs, postJson, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

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

/** `count` HTTP clients, each in a region of its own, with long names: every snapshot is ~1 KB per client. */
async function bigFleet(url: string, count: number): Promise<void> {
  for (let first = 0; first < count; first += 100) {
    const batch = Array.from({ length: Math.min(100, count - first) }, (_, offset) => first + offset)
    const answers = await Promise.all(
      batch.map((i) =>
        postJson(`${url}/client/heartbeat`, {
          node_id: `node-${i}-${'n'.repeat(100)}`,
          token: TOKEN,
          region: `region-${i}-${'r'.repeat(100)}`,
          ip: '127.0.0.1',
          port: 10_000 + i,
        }),
      ),
    )
    for (const answer of answers) expect(answer.status).toBe(200)
  }
}

describe('a dashboard that stops reading', () => {
  test('is cut after ws.write_timeout, as an agent that stops reading is, instead of holding its send buffer', async () => {
    // read_timeout is long, so only write_timeout can end it in time.
    const mls = server({ ws: { write_timeout: 0.5, read_timeout: 300 } })
    await bigFleet(mls.url, 1500)
    const socket = await neverReadingSocket(mls.url)
    expect(await metricSample(mls.url, 'moonlight_websocket_connections')).toBe(1)
    // "send monitor again at any time for a fresh snapshot": asked for again and again, read never. One
    // snapshot a second fills the socket's buffers in a few seconds; then it has write_timeout to read.
    const asking = setInterval(() => socket.write(textFrame(JSON.stringify({ type: 'monitor', payload: { token: TOKEN } }))), 100)
    defer(() => clearInterval(asking))
    await waitFor(
      async () => (await metricSample(mls.url, 'moonlight_websocket_connections')) === 0,
      'the server to cut the dashboard that does not read',
      20000,
    )
  })
})

describe('a dashboard that asks for snapshots in a loop', () => {
  test('gets one a second, however often it asks: a snapshot of a large fleet is work on the thread tasks run on', async () => {
    const mls = server()
    await bigFleet(mls.url, 20)
    const dashboard = await openWs(mls.wsUrl)
    defer(dashboard.close)
    const started = Date.now()
    // Every 50 ms for 2.5 s: 50 asks.
    while (Date.now() - started < 2500) {
      dashboard.send({ type: 'monitor', payload: { token: TOKEN } })
      await Bun.sleep(50)
    }
    const snapshots = () => dashboard.messages.filter((message) => message.type === 'monitor_ok').length
    // At once, then after 1 s and 2 s, and the asks after that as one at 3 s: none is lost, none is more.
    await waitFor(() => snapshots() >= 4, 'the last asks answered once their second is up')
    await Bun.sleep(1200)
    expect(snapshots()).toBe(4)
  })
})
