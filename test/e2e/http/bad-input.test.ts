import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { connect } from 'node:net'
import { parseConfig } from '../../../src/config/config.ts'
import { openWs, postJson, postTask, startTestServer, startWsAgent, type TestServer, TOKEN, upgradeRequest } from '../../support/helpers.ts'

describe('bad input gets a clear JSON answer over HTTP', () => {
  let mls: TestServer
  beforeAll(() => {
    mls = startTestServer({ max_body_bytes: 2048 })
  })
  afterAll(() => mls.stop())

  test('no token: 401 saying how to send one', async () => {
    const result = await postTask(mls.url, { payload: 1 }, null)
    expect(result.status).toBe(401)
    expect(result.json()).toMatchObject({ code: 'unauthorized', error: expect.stringContaining('Authorization: Bearer <token>') })
  })

  test('wrong token: 401', async () => {
    expect((await postTask(mls.url, { payload: 1 }, 'not-a-token')).status).toBe(401)
  })

  test('body that is not JSON: 400', async () => {
    const result = await postTask(mls.url, '{"payload": ')
    expect(result.status).toBe(400)
    expect(result.json()).toEqual({ error: 'request body is not valid JSON', code: 'invalid_json' })
  })

  test('missing payload or a bad field: 400 listing each problem', async () => {
    const missing = await postTask(mls.url, { region: 'usa' })
    expect(missing.status).toBe(400)
    expect(missing.json()).toMatchObject({ code: 'invalid_body', issues: [{ path: 'payload' }] })
    const bad = await postTask(mls.url, { region: 42, payload: 1, mode: 'shout' })
    expect(bad.status).toBe(400)
    expect(
      bad
        .json()
        .issues.map((issue: { path: string }) => issue.path)
        .sort(),
    ).toEqual(['mode', 'region'])
  })

  test('not JSON content type: 415 saying which to send', async () => {
    const response = await fetch(`${mls.url}/task/request`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'payload=1',
    })
    expect(response.status).toBe(415)
    expect(await response.json()).toMatchObject({ code: 'unsupported_media_type', error: expect.stringContaining('application/json') })
  })

  test('a body over max_body_bytes: 413, by its declared length or while streaming', async () => {
    const big = JSON.stringify({ payload: 'x'.repeat(4096) })
    const declared = await postTask(mls.url, big)
    expect(declared.status).toBe(413)
    expect(declared.json()).toMatchObject({ code: 'body_too_large', max_body_bytes: 2048 })
    // A chunked body has no Content-Length: the limit is enforced while reading.
    const chunks = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 8; i++) controller.enqueue(new TextEncoder().encode(i === 0 ? '{"payload":"' : 'y'.repeat(1024)))
        controller.close()
      },
    })
    const streamed = await fetch(`${mls.url}/task/request`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: chunks,
    })
    expect(streamed.status).toBe(413)
  })

  test('bad heartbeats: 400 for a bad body, 401 for a bad token', async () => {
    const bad = await postJson(`${mls.url}/client/heartbeat`, { node_id: 'x', token: TOKEN, region: 'usa', port: 'eighty' })
    expect(bad.status).toBe(400)
    expect(bad.json().issues[0].path).toBe('port')
    const spaces = await postJson(`${mls.url}/client/heartbeat`, { node_id: 'has space', token: TOKEN, region: 'usa', port: 80 })
    expect(spaces.status).toBe(400)
    const wrong = await postJson(`${mls.url}/client/heartbeat`, { node_id: 'x', token: 'nope', region: 'usa', port: 80 })
    expect(wrong.status).toBe(401)
    expect(mls.server.registry.get('x')).toBeUndefined()
  })

  test('unknown routes: 404 in JSON, never HTML', async () => {
    const response = await fetch(`${mls.url}/nope`)
    expect(response.status).toBe(404)
    expect(response.headers.get('content-type')).toContain('application/json')
    expect(await response.json()).toMatchObject({ code: 'not_found' })
  })

  test('a static file named like a prototype member is a 404, not a 500', async () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const response = await fetch(`${mls.url}/static/${name}`)
      expect({ name, status: response.status }).toEqual({ name, status: 404 })
    }
  })

  test('a plain GET on the WebSocket path: 426 in JSON', async () => {
    const response = await fetch(`${mls.url}/ws`)
    expect(response.status).toBe(426)
    expect(await response.json()).toMatchObject({ code: 'upgrade_required' })
  })
})

describe('bad WebSocket messages get an error and the connection stays open', () => {
  let mls: TestServer
  beforeAll(() => {
    mls = startTestServer()
  })
  afterAll(() => mls.stop())

  test('invalid JSON, unknown types, bad fields, binary, out-of-order messages', async () => {
    const peer = await openWs(mls.wsUrl)
    peer.send('{not json')
    expect((await peer.next('error')).payload.message).toBe('message is not valid JSON')
    peer.send({ type: 'dance' })
    expect((await peer.next('error')).payload.message).toMatch(/^invalid message: type/)
    peer.send({ type: 'register', payload: { node_id: 'n1', token: TOKEN } })
    expect((await peer.next('error')).payload.message).toMatch(/region/)
    peer.send({ type: 'heartbeat' })
    expect((await peer.next('error')).payload.message).toMatch(/register before/)
    peer.send({ type: 'task_response', payload: { task_id: 't1', response: 1 } })
    expect((await peer.next('error')).payload.message).toMatch(/register before/)
    peer.socket.send(new Uint8Array([1, 2, 3]))
    expect((await peer.next('error')).payload.message).toMatch(/binary/)
    // Still open: a valid register now works.
    peer.send({ type: 'register', payload: { node_id: 'n1', token: TOKEN, region: 'usa', port: 1 } })
    expect((await peer.next('registered')).payload).toMatchObject({ node_id: 'n1', region: 'usa', heartbeat_interval: 30 })
    peer.send({ type: 'heartbeat' })
    expect((await peer.next('heartbeat_ack')).payload.server_time).toBeTruthy()
    peer.send({ type: 'task_response', payload: { task_id: 'never-sent', response: 1 } })
    expect((await peer.next('error')).payload.message).toMatch(/no task "never-sent"/)
    peer.send({ type: 'register', payload: { node_id: 'n2', token: TOKEN, region: 'usa', port: 1 } })
    expect((await peer.next('error')).payload.message).toMatch(/already registered as "n1"/)
    peer.close()
  })

  test('a bad token on register: error, then the connection is closed', async () => {
    const peer = await openWs(mls.wsUrl)
    peer.send({ type: 'register', payload: { node_id: 'intruder', token: 'wrong', region: 'usa', port: 1 } })
    expect((await peer.next('error')).payload.message).toBe('invalid token')
    expect((await peer.closed).code).toBe(1008)
    expect(mls.server.registry.get('intruder')).toBeUndefined()
  })

  test('an unregistered socket gets no tasks', async () => {
    const idle = await openWs(mls.wsUrl)
    const result = await postTask(mls.url, { payload: 1 })
    expect(result.status).toBe(503)
    expect(idle.messages).toEqual([])
    idle.close()
  })
})

describe('connection limit', () => {
  test('beyond ws.max_connections new upgrades are refused with 503', async () => {
    const mls = startTestServer({ ws: { max_connections: 2 } })
    try {
      // Registered, so that only max_connections applies (ws.max_unregistered is 1 here).
      const first = await startWsAgent(mls.wsUrl, { nodeId: 'first', region: 'usa' })
      const second = await startWsAgent(mls.wsUrl, { nodeId: 'second', region: 'usa' })
      await expect(openWs(mls.wsUrl)).rejects.toThrow(/cannot connect/)
      const refused = await upgradeRequest(mls.wsUrl)
      expect(refused.status).toBe(503)
      expect(await refused.json()).toMatchObject({ code: 'too_many_connections' })
      first.close()
      await first.closed
      const third = await openWs(mls.wsUrl)
      third.close()
      second.close()
    } finally {
      await mls.stop()
    }
  })
})

describe('heartbeat addresses and tokens', () => {
  let mls: TestServer
  beforeAll(() => {
    mls = startTestServer()
  })
  afterAll(() => mls.stop())

  /** A raw HTTP/1.1 heartbeat sent from 127.0.0.2, chunked (no Content-Length) or not. */
  async function heartbeatFrom127002(nodeId: string, chunked: boolean): Promise<string> {
    const body = JSON.stringify({ node_id: nodeId, token: TOKEN, region: 'usa', port: 3000 })
    const url = new URL(mls.url)
    const socket = connect({ host: '127.0.0.1', port: Number(url.port), localAddress: '127.0.0.2' })
    const framing = chunked
      ? `Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`
      : `Content-Length: ${body.length}\r\n\r\n${body}`
    socket.write(`POST /client/heartbeat HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nConnection: close\r\n${framing}`)
    let reply = ''
    for await (const chunk of socket) reply += chunk
    return reply
  }

  test('without ip, the source address is used, whether or not the body is chunked', async () => {
    expect(await heartbeatFrom127002('plain', false)).toStartWith('HTTP/1.1 200')
    expect(await heartbeatFrom127002('chunked', true)).toStartWith('HTTP/1.1 200')
    expect(mls.server.registry.get('plain')!.ip).toBe('127.0.0.2')
    expect(mls.server.registry.get('chunked')!.ip).toBe('127.0.0.2')
  })

  test('an ip that is not an address or a host name is refused', async () => {
    for (const ip of ['evil.example/x?', 'a b', 'user@host']) {
      const result = await postJson(`${mls.url}/client/heartbeat`, { ip, node_id: 'x', token: TOKEN, region: 'usa', port: 80 })
      expect(result.status).toBe(400)
      expect(result.json().issues[0]).toEqual({ path: 'ip', message: 'must be an IP address or a host name' })
    }
  })

  test('the Bearer scheme name is case-insensitive', async () => {
    const response = await fetch(`${mls.url}/clients`, { headers: { authorization: `bearer ${TOKEN}` } })
    expect(response.status).toBe(200)
  })
})

describe('names: one rule for the config and for agents', () => {
  let mls: TestServer
  beforeAll(() => {
    mls = startTestServer()
  })
  afterAll(() => mls.stop())

  /** What the config says of a region name, read from a config file's text (JSON.parse makes "__proto__" an own key, as a file would). */
  function configRefusal(name: string): string {
    try {
      parseConfig(JSON.parse(`{ "region_hierarchy": { "usa": ${JSON.stringify(name)} } }`), 'names.json')
    } catch (error) {
      const line = /region_hierarchy\.usa: (.*)/.exec((error as Error).message)
      if (line) return line[1]!
    }
    throw new Error(`the config accepts the region name ${name}`)
  }

  test('a heartbeat or a WebSocket register naming "__proto__" as node_id or region is refused with the config\'s words', async () => {
    const refusal = configRefusal('__proto__')
    for (const field of ['node_id', 'region']) {
      // A computed key: an own property named "__proto__", as JSON.parse makes it on the server.
      const hello = { node_id: 'named-proto', token: TOKEN, region: 'usa', port: 80, [field]: '__proto__' }
      const heartbeat = await postJson(`${mls.url}/client/heartbeat`, hello)
      expect({ field, status: heartbeat.status, body: heartbeat.json() }).toMatchObject({
        field,
        status: 400,
        body: { code: 'invalid_body', issues: [{ path: field, message: refusal }] },
      })
      const peer = await openWs(mls.wsUrl)
      peer.send({ type: 'register', payload: hello })
      expect((await peer.next('error')).payload).toMatchObject({ code: 'invalid_message', message: `invalid message: payload.${field}: ${refusal}` })
      peer.close()
    }
    expect([...mls.server.registry.all()].map((client) => client.nodeId)).not.toContain('named-proto')
    expect(mls.server.registry.get('__proto__')).toBeUndefined()
  })

  test('a region name agents may not use (a space in it) is refused by the config in the same words', async () => {
    const spaced = await postJson(`${mls.url}/client/heartbeat`, { node_id: 'spaced', token: TOKEN, region: 'us east', port: 80 })
    expect(spaced.status).toBe(400)
    expect(configRefusal('us east')).toBe(spaced.json().issues[0].message)
  })
})
