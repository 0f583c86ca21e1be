import { describe, expect, test } from 'bun:test'
import { type AddressInfo, createServer, type Server as NetServer } from 'node:net'
import { openWs, postTask, TOKEN, testScope } from '../../support/helpers.ts'

const { defer, server } = testScope()

/** Payload texts that parsing and serializing again would change. */
const FRAGILE = {
  'an integer beyond 2^53': '12345678901234567890',
  'a number out of range': '1e400',
  'duplicate keys': '{"a":1,"a":2}',
  'spacing and escapes': '{ "text" : "caf\\u00e9 \\/ \\"q\\"" ,\n "n": 1.50 }',
  'a negative zero and an exponent': '[-0, 1E+2, 0.1e-5]',
  // Written as UTF-8 straight from the string: the declared length must count bytes, not characters.
  'characters of two, three and four UTF-8 bytes': '{"text":"café ☃ 😀"}',
}

/** An HTTP agent that records the exact bytes of each /work body. */
function rawHttpAgent(mls: ReturnType<typeof server>, nodeId: string) {
  const bodies: string[] = []
  const agent = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: async (request) => {
      bodies.push(await request.text())
      return Response.json({ ok: true })
    },
  })
  defer(() => agent.stop(true))
  return {
    bodies,
    register: () =>
      fetch(`${mls.url}/client/heartbeat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region: 'usa', port: agent.port }),
      }),
  }
}

/** Starts a raw TCP agent on a free port of 127.0.0.1 and registers it by heartbeat as `nodeId` in region usa. */
async function listenAndRegister(mls: ReturnType<typeof server>, agent: NetServer, nodeId: string): Promise<void> {
  await new Promise<void>((resolve) => agent.listen(0, '127.0.0.1', resolve))
  defer(() => agent.close())
  const port = (agent.address() as AddressInfo).port
  const heartbeat = await fetch(`${mls.url}/client/heartbeat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region: 'usa', port }),
  })
  expect(heartbeat.status).toBe(200)
}

/** A WebSocket agent that records the exact text of each task message and answers it. */
async function rawWsAgent(mls: ReturnType<typeof server>, nodeId: string) {
  const frames: string[] = []
  const peer = await openWs(mls.wsUrl)
  defer(peer.close)
  peer.socket.addEventListener('message', (event) => {
    const text = String(event.data)
    const message = JSON.parse(text)
    if (message.type !== 'task') return
    frames.push(text)
    peer.send({ type: 'task_response', payload: { task_id: message.task_id, response: { ok: true } } })
  })
  peer.send({ type: 'register', payload: { node_id: nodeId, token: TOKEN, region: 'usa' } })
  await peer.next('registered')
  return frames
}

describe('the payload reaches the agent byte for byte', () => {
  for (const [what, payload] of Object.entries(FRAGILE)) {
    test(`${what}: HTTP agent, WebSocket agent and broadcast`, async () => {
      const mls = server()
      const http = rawHttpAgent(mls, 'http-1')
      expect((await http.register()).status).toBe(200)
      const body = `{"region":"usa","payload":${payload}}`
      expect((await postTask(mls.url, body)).status).toBe(200)
      expect(http.bodies).toEqual([payload])

      mls.server.registry.remove('http-1', 'test')
      const frames = await rawWsAgent(mls, 'ws-1')
      expect((await postTask(mls.url, body)).status).toBe(200)
      expect(frames).toHaveLength(1)
      expect(frames[0]).toEndWith(`"payload":${payload}}`)

      expect((await http.register()).status).toBe(200)
      const broadcast = await postTask(mls.url, `{"region":"usa","mode":"broadcast","payload":${payload}}`)
      expect(broadcast.status).toBe(200)
      expect(broadcast.json().answered).toBe(2)
      expect(http.bodies[1]).toBe(payload)
      expect(frames[1]).toEndWith(`"payload":${payload}}`)
    })
  }

  test('the last of two payload keys is the one sent, as JSON.parse reads the body', async () => {
    const mls = server()
    const http = rawHttpAgent(mls, 'http-1')
    await http.register()
    expect((await postTask(mls.url, '{"payload":1,"region":"usa","payload":{"second":12345678901234567890}}')).status).toBe(200)
    expect(http.bodies).toEqual(['{"second":12345678901234567890}'])
  })

  test("an agent's JSON answer comes back byte for byte, alone and in a broadcast", async () => {
    const mls = server()
    const answer = '{"big":12345678901234567890,"tiny":1e400,"dup":1,"dup":2}'
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    peer.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'task') peer.send(`{"type":"task_response","payload":{"task_id":${JSON.stringify(message.task_id)},"response":${answer}}}`)
    })
    peer.send({ type: 'register', payload: { node_id: 'ws-1', token: TOKEN, region: 'usa' } })
    await peer.next('registered')
    const single = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(single.text).toBe(answer)
    const broadcast = await postTask(mls.url, { region: 'usa', payload: 1, mode: 'broadcast' })
    expect(broadcast.text).toContain(`"response":${answer}}`)
  })
})

describe("an HTTP agent's answer reaches the caller byte for byte", () => {
  /**
   * Answers whose bytes or type a text step could change: each body, its Content-Type (none: the agent
   * names none, and the caller gets Bun's for bytes, application/octet-stream, whatever the bytes are),
   * and whether it comes in two writes (the second after a pause).
   */
  const ANSWERS: Array<{ what: string; bytes: number[]; split?: number; type?: string }> = [
    { what: 'ASCII JSON', bytes: [...Buffer.from('{"ok":true,"n":12345678901234567890}')] },
    { what: 'UTF-8 of two, three and four bytes', bytes: [...Buffer.from('{"text":"café ☃ 😀"}')] },
    { what: 'a Latin-1 byte (not UTF-8)', bytes: [0x7b, 0x22, 0xe9, 0x22, 0x7d] },
    { what: 'bytes that are no text at all', bytes: [0x00, 0xff, 0xfe, 0x80, 0x7f, 0x0a] },
    { what: 'ASCII, then UTF-8 in a later piece', bytes: [...Buffer.from('{"a":"ascii first","b":"é☃"}')], split: 10 },
    { what: 'ASCII in two pieces', bytes: [...Buffer.from('{"a":"ascii first","b":"ascii too"}')], split: 12 },
    { what: 'ASCII with no Content-Type', bytes: [...Buffer.from('hello')], type: 'none' },
    { what: 'a Latin-1 byte with no Content-Type', bytes: [0xe9], type: 'none' },
  ]

  test('whether its bytes are ASCII, UTF-8 or neither, in one piece or two, with a Content-Type or none', async () => {
    const mls = server()
    const agent = createServer((socket) => {
      let pending = Buffer.alloc(0)
      socket.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk])
        const headEnd = pending.indexOf('\r\n\r\n')
        if (headEnd === -1) return
        const length = Number(/content-length: (\d+)/i.exec(pending.subarray(0, headEnd).toString('latin1'))?.[1])
        if (pending.length < headEnd + 4 + length) return
        const { n } = JSON.parse(pending.subarray(headEnd + 4, headEnd + 4 + length).toString()) as { n: number }
        pending = pending.subarray(headEnd + 4 + length)
        const { bytes, split, type } = ANSWERS[n]!
        const body = Buffer.from(bytes)
        const typeLine = type === 'none' ? '' : `content-type: ${type ?? 'application/x-bytes'}\r\n`
        const head = `HTTP/1.1 200 OK\r\n${typeLine}content-length: ${body.length}\r\n\r\n`
        if (split === undefined) socket.write(Buffer.concat([Buffer.from(head), body]))
        else {
          socket.write(Buffer.concat([Buffer.from(head), body.subarray(0, split)]))
          setTimeout(() => socket.write(body.subarray(split)), 50)
        }
      })
    })
    await listenAndRegister(mls, agent, 'bytes')
    const received: Array<[string, number, string | null, number[]]> = []
    // Twice over: the second round meets the answer heads the pool has seen already.
    for (let round = 0; round < 2; round++)
      for (const [n, answer] of ANSWERS.entries()) {
        const response = await fetch(`${mls.url}/task/request`, {
          method: 'POST',
          headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ region: 'usa', payload: { n } }),
        })
        received.push([answer.what, response.status, response.headers.get('content-type'), [...new Uint8Array(await response.arrayBuffer())]])
      }
    const expected = ANSWERS.map((answer): [string, number, string, number[]] => [
      answer.what,
      200,
      answer.type === 'none' ? 'application/octet-stream' : (answer.type ?? 'application/x-bytes'),
      answer.bytes,
    ])
    expect(received).toEqual([...expected, ...expected])
  })
})

describe('a payload the server will not pass on gets a clear 400', () => {
  test('nested 100 000 deep: 400 too_deep, not 500', async () => {
    const mls = server({ max_body_bytes: 1024 * 1024 })
    const deep = '['.repeat(100_000) + ']'.repeat(100_000)
    const result = await postTask(mls.url, `{"region":"usa","payload":${deep}}`)
    expect(result.status).toBe(400)
    expect(result.json()).toEqual({ error: 'request body is nested deeper than 1000 levels', code: 'too_deep', max_depth: 1000 })
  })

  test('the same through the Hono route (a chunked body) gives the same answer', async () => {
    const mls = server({ max_body_bytes: 1024 * 1024 })
    const deep = '['.repeat(100_000) + ']'.repeat(100_000)
    const body = new TextEncoder().encode(`{"region":"usa","payload":${deep}}`)
    const response = await fetch(`${mls.url}/task/request`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      // A stream has no declared length: it takes the Hono route.
      body: new ReadableStream({
        start(controller) {
          controller.enqueue(body)
          controller.close()
        },
      }),
    })
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({ code: 'too_deep' })
  })
})

describe('a payload larger than the socket takes at once', () => {
  test('9 MB of three-byte characters reach a slow-reading HTTP agent whole: the rest is written as the socket drains', async () => {
    const mls = server({ max_body_bytes: 16 * 1024 * 1024 })
    const payload = JSON.stringify('☃'.repeat(3_000_000))
    const received = Promise.withResolvers<Buffer>()
    // A raw agent that reads nothing for half a second: the server's first write cannot take the whole request.
    const agent = createServer((socket) => {
      socket.pause()
      setTimeout(() => socket.resume(), 500)
      const chunks: Buffer[] = []
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk)
        const all = Buffer.concat(chunks)
        const headEnd = all.indexOf('\r\n\r\n')
        if (headEnd === -1) return
        const length = Number(/content-length: (\d+)/i.exec(all.subarray(0, headEnd).toString('latin1'))?.[1])
        if (all.length < headEnd + 4 + length) return
        received.resolve(all.subarray(headEnd + 4))
        socket.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}')
      })
    })
    await listenAndRegister(mls, agent, 'slow-reader')
    const result = await postTask(mls.url, `{"region":"usa","payload":${payload}}`)
    expect(result.status).toBe(200)
    const body = await received.promise
    expect(body.length).toBe(Buffer.byteLength(payload))
    expect(body.equals(Buffer.from(payload))).toBe(true)
  })
})
