import { afterAll, describe, expect, test } from 'bun:test'
import { type AgentAddress, type AnswerSink, HttpClientPool } from '../../../src/transports/http-client/pool.ts'
import type { ResponseHead } from '../../../src/transports/http-client/response-parser.ts'
import { makeTestCa } from '../../support/certificates.ts'
import { postJson, postTask, ROOT, startTestServer, TOKEN } from '../../support/helpers.ts'

const stops: Array<() => void> = []
afterAll(() => {
  for (const stop of stops.reverse()) stop()
})

interface Answered {
  head: ResponseHead
  body: string
}

function post(path: string, body: string, host = '127.0.0.1:1'): Buffer {
  return Buffer.from(`POST ${path} HTTP/1.1\r\nhost: ${host}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}

/** One request through the pool, its answer collected. */
async function call(pool: HttpClientPool, address: AgentAddress, body = 'ping', maxBodyBytes = 1 << 20): Promise<Answered> {
  let head: ResponseHead | undefined
  const chunks: Buffer[] = []
  const sink: AnswerSink = {
    head: (received) => {
      head = received
      return maxBodyBytes
    },
    body: (chunk) => chunks.push(Buffer.from(chunk)),
    end: () => {},
  }
  await pool.request(address, post('/work', body), sink).done
  return { head: head!, body: Buffer.concat(chunks).toString('latin1') }
}

function newPool(options: Partial<ConstructorParameters<typeof HttpClientPool>[0]> = {}): HttpClientPool {
  const pool = new HttpClientPool({ maxConnections: 64, idleTimeoutMs: 30_000, ...options })
  stops.push(() => pool.close())
  return pool
}

/** A Bun.serve agent that echoes the body and counts the connections it saw. */
function bunAgent(work: (request: Request) => Response | Promise<Response> = async (request) => new Response(`echo:${await request.text()}`)) {
  const server = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: work })
  stops.push(() => server.stop(true))
  return { server, address: { scheme: 'http', host: '127.0.0.1', port: server.port! } as AgentAddress }
}

/** A raw TCP agent: `reply` is given each request's bytes and writes whatever framing the test wants. */
function rawAgent(reply: (socket: import('bun').Socket<{ seen: string }>, request: string, connection: number) => void) {
  let connections = 0
  const listener = Bun.listen<{ seen: string; id: number }>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(socket) {
        socket.data = { seen: '', id: ++connections }
      },
      data(socket, data) {
        socket.data.seen += data.toString('latin1')
        // One request at a time: answer once a whole one (head and its declared body) has come.
        const end = socket.data.seen.indexOf('\r\n\r\n')
        if (end === -1) return
        const length = Number(/content-length: (\d+)/i.exec(socket.data.seen)?.[1] ?? 0)
        if (socket.data.seen.length < end + 4 + length) return
        const request = socket.data.seen.slice(0, end + 4 + length)
        socket.data.seen = socket.data.seen.slice(end + 4 + length)
        reply(socket as never, request, socket.data.id)
      },
    },
  })
  stops.push(() => listener.stop(true))
  return { connections: () => connections, address: { scheme: 'http', host: '127.0.0.1', port: listener.port } as AgentAddress }
}

describe('HTTP client pool', () => {
  test('reuses one keep-alive connection for calls one after another, and reports its figures', async () => {
    const agent = bunAgent()
    const pool = newPool()
    for (let index = 0; index < 20; index++) expect((await call(pool, agent.address, `n${index}`)).body).toBe(`echo:n${index}`)
    expect(pool.figures()).toEqual([{ agent: `http://127.0.0.1:${agent.address.port}`, open: 1, busy: 0, queued: 0 }])
    expect(agent.server.pendingRequests).toBe(0)
  })

  test('at most maxConnections per agent, the rest queued in order', async () => {
    const releases: Array<() => void> = []
    const agent = bunAgent(async (request) => {
      const text = await request.text()
      await new Promise<void>((resolve) => releases.push(resolve))
      return new Response(text)
    })
    const pool = newPool({ maxConnections: 2 })
    const order: string[] = []
    const calls = ['a', 'b', 'c', 'd', 'e'].map((body) => call(pool, agent.address, body).then((answer) => order.push(answer.body)))
    while (releases.length < 2) await Bun.sleep(5)
    expect(pool.figures()[0]).toMatchObject({ open: 2, busy: 2, queued: 3 })
    while (order.length < 5) {
      releases.shift()?.()
      await Bun.sleep(5)
    }
    await Promise.all(calls)
    expect(order.slice(2).sort()).toEqual(['c', 'd', 'e'])
    expect(pool.figures()[0]).toMatchObject({ open: 2, busy: 0, queued: 0 })
  })

  test('odd framings from a raw agent: chunked with trailers, 100 Continue, HTTP/1.0 close-delimited, Connection: close', async () => {
    const agent = rawAgent((socket, request) => {
      const body = request.slice(request.indexOf('\r\n\r\n') + 4)
      if (body === 'chunked') socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n')
      else if (body === 'continue') socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nthen')
      else if (body === 'old') {
        socket.write('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close')
        socket.end()
      } else if (body === 'close') {
        socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye')
        socket.end()
      } else {
        // Written a byte at a time: heads and bodies split across packets.
        const answer = 'HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Split: yes\r\n\r\nsplit'
        let index = 0
        const next = () => {
          if (index >= answer.length) return
          socket.write(answer[index++]!)
          setTimeout(next, 0)
        }
        next()
      }
    })
    const pool = newPool()
    expect((await call(pool, agent.address, 'chunked')).body).toBe('abcde')
    expect(await call(pool, agent.address, 'continue')).toMatchObject({ body: 'then', head: { status: 200 } })
    expect(await call(pool, agent.address, 'split')).toMatchObject({
      body: 'split',
      head: {
        status: 201,
        headers: [
          ['content-length', '5'],
          ['x-split', 'yes'],
        ],
      },
    })
    expect(agent.connections()).toBe(1)
    expect(await call(pool, agent.address, 'old')).toMatchObject({ body: 'until close', head: { minorVersion: 0, keepAlive: false } })
    expect(await call(pool, agent.address, 'close')).toMatchObject({ body: 'bye', head: { keepAlive: false } })
    expect((await call(pool, agent.address, 'chunked')).body).toBe('abcde')
    expect(agent.connections()).toBe(3)
  })

  test('an answer over the body limit, or with a head over its limit, fails with its reason', async () => {
    const agent = rawAgent((socket, request) => {
      if (request.endsWith('big')) socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${'10\r\nxxxxxxxxxxxxxxxx\r\n'.repeat(8)}0\r\n\r\n`)
      else socket.write(`HTTP/1.1 200 OK\r\nX-Huge: ${'h'.repeat(70 * 1024)}\r\nContent-Length: 0\r\n\r\n`)
    })
    const pool = newPool()
    await expect(call(pool, agent.address, 'big', 100)).rejects.toMatchObject({ code: 'body_too_large' })
    await expect(call(pool, agent.address, 'head')).rejects.toMatchObject({
      code: 'header_too_large',
      message: "the answer's status line and headers are over 65536 bytes",
    })
  })

  test('a stalled request is cut at its deadline, its socket destroyed and never pooled again', async () => {
    const agent = rawAgent((socket, request, connection) => {
      if (request.endsWith('stall')) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part')
      else socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n${connection}`)
    })
    const pool = newPool()
    expect((await call(pool, agent.address, 'first')).body).toBe('1')
    const sink: AnswerSink = { head: () => 1000, body: () => {}, end: () => {} }
    const stalled = pool.request(agent.address, post('/work', 'stall'), sink)
    await Bun.sleep(50)
    stalled.expire()
    await expect(stalled.done).rejects.toMatchObject({ code: 'timeout' })
    expect(pool.figures()).toEqual([])
    expect((await call(pool, agent.address, 'after')).body).toBe('2')
  })

  test('the stale-socket rule: a reused connection closed before any answer byte sends the request once more on a fresh one', async () => {
    // The agent drops every connection's second request unanswered, as if it had just closed it as idle.
    const seen: string[] = []
    const agent = rawAgent((socket, request, connection) => {
      seen.push(`${connection}:${request.slice(request.indexOf('\r\n\r\n') + 4)}`)
      if (seen.filter((entry) => entry.startsWith(`${connection}:`)).length === 2) socket.end()
      else socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${request.length}\r\n\r\n${request}`)
    })
    const pool = newPool()
    await call(pool, agent.address, 'one')
    const second = await call(pool, agent.address, 'two')
    expect(second.body).toEndWith('two')
    expect(seen).toEqual(['1:one', '1:two', '2:two'])
  })

  test('a fresh connection closed before answering is a failure, not sent again', async () => {
    let requests = 0
    const agent = rawAgent((socket) => {
      requests++
      socket.end()
    })
    const pool = newPool()
    await expect(call(pool, agent.address)).rejects.toMatchObject({ code: 'closed' })
    await Bun.sleep(50)
    expect(requests).toBe(1)
  })

  test('an agent that closes mid-answer fails the request', async () => {
    const agent = rawAgent((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc')
      socket.end()
    })
    await expect(call(newPool(), agent.address)).rejects.toMatchObject({ code: 'closed' })
  })

  test('nobody listening is a connect failure', async () => {
    const listener = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
    const port = listener.port
    listener.stop(true)
    await expect(call(newPool(), { scheme: 'http', host: '127.0.0.1', port })).rejects.toMatchObject({ code: 'connect' })
  })

  test('idle connections are closed after idleTimeoutMs, and sooner when Keep-Alive: timeout says so', async () => {
    const plain = bunAgent()
    const pool = newPool({ idleTimeoutMs: 100 })
    await call(pool, plain.address)
    expect(pool.figures()).toHaveLength(1)
    while (pool.figures().length > 0) await Bun.sleep(20)
    const short = rawAgent((socket) => socket.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 0\r\n\r\n'))
    const longPool = newPool({ idleTimeoutMs: 60_000 })
    await call(longPool, short.address)
    // timeout=1 leaves no second to spare: the pool closes it at its next sweep.
    while (longPool.figures().length > 0) await Bun.sleep(20)
  })

  test('an agent closing idle sockets at random while calls run fails no call', async () => {
    let closed = 0
    const agent = rawAgent((socket, request) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${request.length}\r\n\r\n${request}`)
      // After some answers the agent drops the connection as idle, just as the next call may be written to it.
      if (Math.random() < 0.3) {
        closed++
        setTimeout(() => socket.end(), Math.random() * 3)
      }
    })
    const pool = newPool({ maxConnections: 8 })
    const results = await Promise.allSettled(
      Array.from({ length: 400 }, async (_, index) => {
        await Bun.sleep(Math.random() * 50)
        return (await call(pool, agent.address, `task-${index}`)).body.endsWith(`task-${index}`)
      }),
    )
    expect(results.filter((result) => result.status === 'rejected')).toEqual([])
    expect(results.every((result) => result.status === 'fulfilled' && result.value)).toBe(true)
    expect(closed).toBeGreaterThan(0)
  })

  test('https agents: verified against the given CA, refused without it', async () => {
    const ca = makeTestCa()
    const certificate = ca.issue('agent')
    const server = Bun.serve({
      hostname: '127.0.0.1',
      port: 0,
      tls: { cert: certificate.cert, key: certificate.key },
      fetch: async (request) => new Response(`tls:${await request.text()}`),
    })
    stops.push(() => server.stop(true))
    const address: AgentAddress = { scheme: 'https', host: '127.0.0.1', port: server.port!, ca: ca.ca }
    const pool = newPool()
    expect((await call(pool, address, 'x')).body).toBe('tls:x')
    expect((await call(pool, address, 'y')).body).toBe('tls:y')
    expect(pool.figures()[0]).toMatchObject({ open: 1 })
    const refused = call(newPool(), { ...address, ca: undefined })
    await expect(refused).rejects.toMatchObject({ code: 'tls' })
  })
})

/** An agent on Node's own node:http, run under Node rather than Bun: another stack's framing and keep-alive. */
const NODE_AGENT = `
const http = require('node:http')
const server = http.createServer((request, response) => {
  let body = ''
  request.on('data', (chunk) => (body += chunk))
  request.on('end', () => {
    if (body === 'chunked') {
      response.setHeader('content-type', 'text/plain')
      response.write('part one, ')
      setTimeout(() => response.end('part two'), 5)
    } else {
      response.setHeader('content-type', 'application/json')
      response.end(JSON.stringify({ echo: body, socket: request.socket.remotePort }))
    }
  })
})
server.keepAliveTimeout = 5000
server.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port))
`

describe('HTTP client pool against node:http under Node', () => {
  test('keeps one connection across calls, reads its Keep-Alive timeout and its chunked answers', async () => {
    const child = Bun.spawn(['node', '-e', NODE_AGENT], { stdout: 'pipe', stderr: 'inherit' })
    stops.push(() => child.kill())
    const reader = child.stdout.getReader()
    let output = ''
    while (!/PORT \d+/.test(output)) {
      const { value, done } = await reader.read()
      if (done) throw new Error(`the node agent exited: ${output}`)
      output += new TextDecoder().decode(value)
    }
    const address: AgentAddress = { scheme: 'http', host: '127.0.0.1', port: Number(/PORT (\d+)/.exec(output)![1]) }
    const pool = newPool()
    const answers = []
    for (let index = 0; index < 10; index++) answers.push(await call(pool, address, `n${index}`))
    expect(answers.map((answer) => JSON.parse(answer.body).echo)).toEqual(Array.from({ length: 10 }, (_, index) => `n${index}`))
    // One connection: the agent saw every call come from the same port.
    expect(new Set(answers.map((answer) => JSON.parse(answer.body).socket)).size).toBe(1)
    expect(answers[0]!.head).toMatchObject({ status: 200, keepAlive: true, keepAliveTimeoutS: 5 })
    const chunked = await call(pool, address, 'chunked')
    expect(chunked.body).toBe('part one, part two')
    expect(chunked.head.headers).toContainEqual(['transfer-encoding', 'chunked'])
    expect(pool.figures()[0]).toMatchObject({ open: 1, busy: 0, queued: 0 })
  })
})

/** An agent on express, run under Node: the framework many agents are written with. */
const EXPRESS_AGENT = `
const express = require('express')
const app = express()
app.use(express.json({ type: () => true }))
app.post('/work', (request, response) => {
  if (request.body && request.body.fail) return response.status(422).json({ error: 'bad payload' })
  response.set('x-agent', 'express').json({ echo: request.body, task: request.get('x-task-id') })
})
const server = app.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port))
`

describe('an express agent under Node, through the server', () => {
  test('answers tasks over the pool, its status, headers and body passed on', async () => {
    const mls = startTestServer()
    stops.push(() => mls.stop())
    const child = Bun.spawn(['node', '-e', EXPRESS_AGENT], { cwd: ROOT, stdout: 'pipe', stderr: 'inherit' })
    stops.push(() => child.kill())
    const reader = child.stdout.getReader()
    let output = ''
    while (!/PORT \d+/.test(output)) {
      const { value, done } = await reader.read()
      if (done) throw new Error(`the express agent exited: ${output}`)
      output += new TextDecoder().decode(value)
    }
    const port = Number(/PORT (\d+)/.exec(output)![1])
    const heartbeat = await postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'express-1', token: TOKEN, region: 'usa', port })
    expect(heartbeat.status).toBe(200)
    for (let index = 0; index < 5; index++) {
      const result = await postTask(mls.url, { region: 'usa', payload: { n: index } })
      expect(result.status).toBe(200)
      expect(result.headers.get('x-agent')).toBe('express')
      expect(result.json()).toEqual({ echo: { n: index }, task: result.headers.get('x-task-id') })
    }
    const refused = await postTask(mls.url, { region: 'usa', payload: { fail: true } })
    expect(refused.status).toBe(422)
    expect(refused.json()).toEqual({ error: 'bad payload' })
  })
})
