/**
 * Requests no well-behaved client sends, written as raw bytes on a TCP socket: no Host header, lengths
 * over Bun's own body limit, and the malformed requests Bun answers itself before our code runs.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { connect } from 'node:net'
import { startTestServer, startWsAgent, type TestServer, TOKEN, type WsAgent } from '../../support/helpers.ts'

interface RawAnswer {
  /** 0 when the server closed the connection without answering. */
  status: number
  /** Header names in lower case. */
  headers: Record<string, string>
  body: string
}

/**
 * Writes `bytes` on a new connection and reads the answer: up to its Content-Length, or until the
 * server closes the connection (Bun's own error answers have no length and close).
 */
async function rawRequest(url: string, bytes: string): Promise<RawAnswer> {
  const { hostname, port } = new URL(url)
  const decoder = new TextDecoder()
  let received = ''
  const text = await new Promise<string>((resolve, reject) => {
    void Bun.connect({
      hostname,
      port: Number(port),
      socket: {
        open: (socket) => void socket.write(bytes),
        data: (socket, chunk) => {
          received += decoder.decode(chunk, { stream: true })
          if (isComplete(received)) {
            socket.end()
            resolve(received)
          }
        },
        close: () => resolve(received),
        error: (_socket, error) => reject(error),
      },
    }).catch(reject)
  })
  return parseAnswer(text)
}

/** A response whose head is in and whose body has reached its Content-Length. */
function isComplete(text: string): boolean {
  const headEnd = text.indexOf('\r\n\r\n')
  if (headEnd === -1) return false
  const length = /^content-length: *(\d+)$/im.exec(text.slice(0, headEnd))?.[1]
  return length !== undefined && Buffer.byteLength(text.slice(headEnd + 4)) >= Number(length)
}

function parseAnswer(text: string): RawAnswer {
  if (text === '') return { status: 0, headers: {}, body: '' }
  const headEnd = text.indexOf('\r\n\r\n')
  const [statusLine = '', ...lines] = text.slice(0, headEnd).split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: text.slice(headEnd + 4) }
}

/** A POST with a JSON body and an exact Content-Length, in HTTP/1.0 (no Host). */
function post10(path: string, body: unknown, headers: Record<string, string> = {}): string {
  const json = JSON.stringify(body)
  const lines = Object.entries({ 'content-type': 'application/json', ...headers, 'content-length': String(Buffer.byteLength(json)) }).map(
    ([name, value]) => `${name}: ${value}\r\n`,
  )
  return `POST ${path} HTTP/1.0\r\n${lines.join('')}\r\n${json}`
}

const BEARER = `Bearer ${TOKEN}`
/** Over Bun's default maxRequestBodySize (128 MiB), which answered such a length itself. */
const OVER_BUNS_DEFAULT = 200 * 1024 * 1024

let mls: TestServer
let agent: WsAgent
beforeAll(async () => {
  mls = startTestServer()
  agent = await startWsAgent(mls.wsUrl, { nodeId: 'east-1', region: 'us-east-1' })
})
afterAll(async () => {
  agent?.close()
  await mls?.stop()
})

describe('a request without a usable Host is routed by its path', () => {
  test('HTTP/1.0 without Host: GET /healthz is 200 {"ok":true}', async () => {
    const answer = await rawRequest(mls.url, 'GET /healthz HTTP/1.0\r\n\r\n')
    expect(answer).toMatchObject({ status: 200, body: '{"ok":true}' })
    expect(answer.headers['content-type']).toStartWith('application/json')
  })

  test('HTTP/1.0 without Host: an unknown path is a 404 naming that path, and "//x" stays a path', async () => {
    const unknown = await rawRequest(mls.url, 'GET /nope?x=1 HTTP/1.0\r\n\r\n')
    expect(unknown.status).toBe(404)
    expect(JSON.parse(unknown.body)).toEqual({ error: 'no route for GET /nope', code: 'not_found' })
    const doubleSlash = await rawRequest(mls.url, 'GET //healthz HTTP/1.0\r\n\r\n')
    expect(JSON.parse(doubleSlash.body)).toEqual({ error: 'no route for GET //healthz', code: 'not_found' })
  })

  test('HTTP/1.1 with an empty Host, or one Bun cannot parse, is routed by its path too', async () => {
    for (const host of ['Host:', 'Host: a b']) {
      const answer = await rawRequest(mls.url, `GET /healthz HTTP/1.1\r\n${host}\r\nConnection: close\r\n\r\n`)
      expect({ host, status: answer.status, body: answer.body }).toEqual({ host, status: 200, body: '{"ok":true}' })
    }
  })

  test("POST /task/request without Host, through Bun's own router: a task runs, a broadcast runs, a missing token is 401", async () => {
    const single = await rawRequest(mls.url, post10('/task/request', { region: 'usa', payload: 'one' }, { authorization: BEARER }))
    expect(single.status).toBe(200)
    expect(JSON.parse(single.body)).toEqual({ node: 'east-1', echo: 'one' })
    // A broadcast through Bun's router, with no Host: routed by its path as well.
    const broadcast = await rawRequest(mls.url, post10('/task/request', { region: 'usa', payload: 'all', mode: 'broadcast' }, { authorization: BEARER }))
    expect(broadcast.status).toBe(200)
    expect(JSON.parse(broadcast.body)).toMatchObject({ targets: 1, answered: 1, results: [{ node_id: 'east-1', status: 200 }] })
    const noToken = await rawRequest(mls.url, post10('/task/request', { payload: 1 }))
    expect(noToken.status).toBe(401)
    expect(JSON.parse(noToken.body)).toMatchObject({ code: 'unauthorized' })
  })
})

describe('a heartbeat without a usable Host', () => {
  test('HTTP/1.0 without Host and without ip: registered at its source address, as with a Host', async () => {
    // Bun.connect cannot choose its local address; node:net can, so the source is not the server's own 127.0.0.1.
    const { port } = new URL(mls.url)
    const socket = connect({ host: '127.0.0.1', port: Number(port), localAddress: '127.0.0.2' })
    socket.write(post10('/client/heartbeat', { node_id: 'no-host', token: TOKEN, region: 'usa', port: 3000 }))
    let reply = ''
    for await (const chunk of socket) reply += chunk
    expect(reply).toStartWith('HTTP/1.1 200')
    expect(mls.server.registry.get('no-host')?.ip).toBe('127.0.0.2')
  })

  test('HTTP/1.1 with an empty Host and a chunked body: registered', async () => {
    const body = JSON.stringify({ node_id: 'chunked-no-host', token: TOKEN, region: 'usa', port: 3000 })
    const chunked = `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`
    const answer = await rawRequest(
      mls.url,
      `POST /client/heartbeat HTTP/1.1\r\nHost:\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunked}`,
    )
    expect(answer.status).toBe(200)
    expect(JSON.parse(answer.body)).toMatchObject({ status: 'ok', node_id: 'chunked-no-host' })
  })
})

describe("a Content-Length over Bun's default body limit gets our JSON answer", () => {
  test('413 body_too_large on both POST routes, decided by the declared length before any body is sent', async () => {
    for (const path of ['/task/request', '/client/heartbeat']) {
      const head = `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: ${BEARER}\r\nContent-Type: application/json\r\nContent-Length: ${OVER_BUNS_DEFAULT}\r\nConnection: close\r\n\r\n`
      const answer = await rawRequest(mls.url, head)
      expect({ path, status: answer.status, type: answer.headers['content-type'] }).toEqual({ path, status: 413, type: 'application/json' })
      expect(JSON.parse(answer.body)).toMatchObject({ code: 'body_too_large', max_body_bytes: 1024 * 1024 })
    }
  })

  test('the largest length Bun parses (17 digits) still reaches us', async () => {
    const answer = await rawRequest(mls.url, `POST /task/request HTTP/1.1\r\nHost: x\r\nAuthorization: ${BEARER}\r\nContent-Length: 99999999999999999\r\n\r\n`)
    expect(answer.status).toBe(413)
    expect(JSON.parse(answer.body)).toMatchObject({ code: 'body_too_large' })
  })

  test('a route that reads no body answers as usual (404 in JSON)', async () => {
    const answer = await rawRequest(mls.url, `POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: ${OVER_BUNS_DEFAULT}\r\nConnection: close\r\n\r\n`)
    expect(answer.status).toBe(404)
    expect(JSON.parse(answer.body)).toEqual({ error: 'no route for POST /nope', code: 'not_found' })
  })
})

/**
 * What Bun answers itself, with an empty body and `Connection: close`, before our fetch handler runs
 * (or, for a malformed chunked body, in place of its answer): Bun.serve has no hook for these.
 * Pinned so that a Bun upgrade that changes any of it is noticed.
 */
describe("what stays Bun's: malformed requests answered with an empty body", () => {
  const big = 'a'.repeat(17 * 1024)
  /** A GET /healthz whose head (request line, headers, blank line) is exactly `bytes` long. */
  const headOf = (bytes: number) => {
    const head = 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: \r\n\r\n'
    return head.replace('X-Pad: ', `X-Pad: ${'a'.repeat(bytes - head.length)}`)
  }
  /** A GET /healthz with `count` header fields, Host and Connection included. */
  const fields = (count: number) =>
    `GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${Array.from({ length: count - 2 }, (_, i) => `X-H${i}: v\r\n`).join('')}\r\n`
  const cases: Array<[string, string, number]> = [
    ['HTTP/1.1 without Host', 'GET /healthz HTTP/1.1\r\n\r\n', 400],
    ['a request line that is not "METHOD target version"', 'GARBAGE\r\n\r\n', 400],
    ['a target that is not a path', 'GET healthz HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['the asterisk target', 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['the HTTP/2 preface (no http2 on this server)', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 400],
    ['a header line without a colon', 'GET /healthz HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n', 400],
    ['a space in a header name', 'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n', 400],
    ['a NUL in a header value', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\n\r\n', 400],
    ['another control character in a header value', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\u0001b\r\n\r\n', 400],
    ['a folded (obs-fold) header line', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n', 400],
    ['a Content-Length that is not digits', 'POST /task/request HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400],
    ['a signed Content-Length', 'POST /task/request HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n', 400],
    ['a Content-Length of 18 digits', 'POST /task/request HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999\r\n\r\n', 400],
    ['two different Content-Lengths', 'POST /task/request HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', 400],
    [
      'Content-Length with Transfer-Encoding',
      'POST /task/request HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      400,
    ],
    ['a Transfer-Encoding other than chunked', 'POST /task/request HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n', 400],
    ['a chunked body in HTTP/1.0', 'POST /task/request HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
    [
      'a malformed chunk size (our handler has started reading; Bun drops its answer)',
      `POST /client/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
      400,
    ],
    ['an HTTP version other than 1.0 and 1.1', 'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n', 505],
    ['an HTTP/0.9 request line (no version)', 'GET /healthz\r\n\r\n', 505],
    ['a space in the target', 'GET /a b HTTP/1.1\r\nHost: x\r\n\r\n', 505],
    ['bare LF line endings', 'GET /healthz HTTP/1.1\nHost: x\n\n', 505],
    ['a request head of 16 KiB and one byte', headOf(16 * 1024 + 1), 431],
    ['a request head over 16 KiB (a long header)', `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${big}\r\n\r\n`, 431],
    ['a request head over 16 KiB (a long url)', `GET /${big} HTTP/1.1\r\nHost: x\r\n\r\n`, 431],
    ['199 header fields', fields(199), 431],
  ]
  for (const [name, bytes, status] of cases) {
    test(`${status} for ${name}`, async () => {
      const answer = await rawRequest(mls.url, bytes)
      expect(answer).toEqual({ status, headers: { connection: 'close' }, body: '' })
    })
  }

  test('just inside those limits the request is ours: a 16 KiB head, 198 header fields', async () => {
    for (const bytes of [headOf(16 * 1024), fields(198)]) {
      const answer = await rawRequest(mls.url, bytes)
      expect({ status: answer.status, body: answer.body }).toEqual({ status: 200, body: '{"ok":true}' })
    }
  })

  test('a method Bun does not know (FROB, or lower-case get): the connection is closed without an answer', async () => {
    for (const method of ['FROB', 'get']) {
      const answer = await rawRequest(mls.url, `${method} /healthz HTTP/1.1\r\nHost: x\r\n\r\n`)
      expect({ method, ...answer }).toEqual({ method, status: 0, headers: {}, body: '' })
    }
  })
})
