/**
 * A body over max_body_bytes, sent by clients that write the whole body before reading the answer (Node's
 * fetch, Python's urllib): closing while they still write gives them EPIPE instead of the JSON 413, so
 * the server reads and drops the rest first, within oversized_body's bounds (a lingering close, as nginx's).
 */
import { describe, expect, test } from 'bun:test'
import { connect, type Socket } from 'node:net'
import { TOKEN, testScope } from '../../support/helpers.ts'

const { defer, server } = testScope()
const MIB = 1024 * 1024

/** A program on the PATH, or a failure naming what to install: never a skipped test. */
function program(name: string, install: string): string {
  const found = Bun.which(name)
  if (!found) throw new Error(`${name} is missing: install it (${install}) to run the clients that write before reading`)
  return found
}

// Each prints `{"status": …, "body": …}`, or `{"error": …}` when the request failed (EPIPE, Broken pipe).
const NODE_CLIENT = `
const [url, token, kib, contentType] = process.argv.slice(1)
const body = JSON.stringify({ region: 'usa', payload: 'x'.repeat(Number(kib) * 1024) })
fetch(url, { method: 'POST', headers: { authorization: 'Bearer ' + token, 'content-type': contentType }, body })
  .then(async (response) => console.log(JSON.stringify({ status: response.status, body: await response.text() })))
  .catch((error) => console.log(JSON.stringify({ error: String(error.cause?.code ?? error.message) })))
`
const PYTHON_CLIENT = `
import json, sys, urllib.error, urllib.request
url, token, kib, content_type = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
body = json.dumps({'region': 'usa', 'payload': 'x' * (kib * 1024)}).encode()
request = urllib.request.Request(url, data=body, headers={'Authorization': 'Bearer ' + token, 'Content-Type': content_type})
try:
    with urllib.request.urlopen(request) as response:
        print(json.dumps({'status': response.status, 'body': response.read().decode()}))
except urllib.error.HTTPError as error:
    print(json.dumps({'status': error.code, 'body': error.read().decode()}))
except Exception as error:
    print(json.dumps({'error': repr(error)}))
`

interface ClientAnswer {
  status?: number
  body?: string
  error?: string
}

type Client = 'node' | 'python'

async function post(client: Client, url: string, mib: number, options: { token?: string; kib?: number; contentType?: string } = {}): Promise<ClientAnswer> {
  const command =
    client === 'node'
      ? [program('node', 'apt-get install -y nodejs'), '-e', NODE_CLIENT]
      : [program('python3', 'apt-get install -y python3'), '-c', PYTHON_CLIENT]
  const { token = TOKEN, kib = mib * 1024, contentType = 'application/json' } = options
  const child = Bun.spawn([...command, url, token, String(kib), contentType], { stdout: 'pipe', stderr: 'inherit' })
  defer(() => child.kill('SIGKILL'))
  const printed = await new Response(child.stdout).text()
  await child.exited
  return JSON.parse(printed) as ClientAnswer
}

const CLIENTS: Client[] = ['node', 'python']
const clientName = (client: Client) => (client === 'node' ? "Node's fetch" : "Python's urllib")

describe('clients that write the whole body before reading get the JSON 413', () => {
  for (const client of CLIENTS) {
    test(`${clientName(client)}: 3, 6 and 20 MiB bodies against the default max_body_bytes`, async () => {
      const mls = server()
      for (const path of ['/task/request', '/client/heartbeat']) {
        for (const mib of [3, 6, 20]) {
          const answer = await post(client, `${mls.url}${path}`, mib)
          expect({ path, mib, status: answer.status, error: answer.error }).toEqual({ path, mib, status: 413, error: undefined })
          expect(JSON.parse(answer.body ?? '')).toEqual({
            error: 'request body exceeds max_body_bytes (1048576 bytes)',
            code: 'body_too_large',
            max_body_bytes: 1048576,
          })
        }
      }
    })
  }
})

describe('clients that write the whole body before reading get the refusal sent before it was read', () => {
  // 900 KiB: under max_body_bytes, over what the kernel's socket buffers take before the server reads.
  const KIB = 900
  for (const client of CLIENTS) {
    test(`${clientName(client)}: a wrong token (401), then too many of them (429), a body not declared JSON (415), no such route (404)`, async () => {
      const mls = server({ auth: { max_failures: 2 } })
      const refusals: Array<[string, { token?: string; contentType?: string }, number, string]> = [
        ['/task/request', { token: 'wrong-token' }, 401, 'unauthorized'],
        ['/clients/n1/eject', { token: 'wrong-token' }, 401, 'unauthorized'],
        ['/task/request', { token: 'wrong-token' }, 429, 'too_many_failures'],
      ]
      for (const [path, options, status, code] of refusals) {
        const answer = await post(client, `${mls.url}${path}`, 0, { ...options, kib: KIB })
        expect({ path, status: answer.status, error: answer.error }).toEqual({ path, status, error: undefined })
        expect(JSON.parse(answer.body ?? '').code).toBe(code)
      }
      // From another address's point of view the server is the same: a fresh one for the refusals that need a good token.
      const fresh = server()
      const others: Array<[string, { contentType?: string }, number, string]> = [
        ['/task/request', { contentType: 'text/plain' }, 415, 'unsupported_media_type'],
        ['/no/such/route', {}, 404, 'not_found'],
      ]
      for (const [path, options, status, code] of others) {
        const answer = await post(client, `${fresh.url}${path}`, 0, { ...options, kib: KIB })
        expect({ path, status: answer.status, error: answer.error }).toEqual({ path, status, error: undefined })
        expect(JSON.parse(answer.body ?? '').code).toBe(code)
      }
    })
  }

  test('a refused body read to its end leaves the connection open: the next request on it is answered', async () => {
    const mls = server()
    const body = JSON.stringify({ region: 'usa', payload: 'x'.repeat(KIB * 1024) })
    const refused = `POST /task/request HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-token\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
    const next = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'
    const { port } = new URL(mls.url)
    const socket: Socket = connect(Number(port), '127.0.0.1')
    defer(() => socket.destroy())
    let received = ''
    const both = new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk) => {
        received += chunk.toString('latin1')
        if ((received.match(/HTTP\/1\.1 /g) ?? []).length === 2 && received.endsWith('}')) resolve()
      })
      socket.on('error', reject)
      socket.on('close', () => reject(new Error(`closed after: ${received.slice(0, 200)}`)))
    })
    socket.write(refused + next)
    await both
    // The second answer follows the first's body directly: status lines are found, not split out.
    const statusLines = received.match(/HTTP\/1\.1 \d{3} [^\r]*/g)
    expect(statusLines).toEqual(['HTTP/1.1 401 Unauthorized', 'HTTP/1.1 200 OK'])
  })

  test('a refused body trickling in is answered with the refusal, and the connection closed, before Bun would time it out', async () => {
    const mls = server()
    // 1 000 bytes a second of a declared 20 000: the wait for the body is bounded well under Bun's 10 s idle timeout,
    // which would otherwise close the connection with no answer at all.
    const closing = await sendUntilClosed(
      mls.url,
      'POST /task/request HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-token\r\nContent-Type: application/json\r\nContent-Length: 20000\r\n\r\n',
      'x'.repeat(1000),
      1000,
    )
    expect(closing.statusLine).toBe('HTTP/1.1 401 Unauthorized')
  })

  test('a refused body longer than oversized_body.discard_bytes is not read: the refusal is sent and the connection closed', async () => {
    const mls = server({ oversized_body: { discard_bytes: 256 * 1024 } })
    const closing = await sendUntilClosed(
      mls.url,
      `POST /task/request HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-token\r\nContent-Type: application/json\r\nContent-Length: ${900 * 1024}\r\n\r\n`,
      'x'.repeat(16 * 1024),
      0,
    )
    expect(closing.statusLine).toBe('HTTP/1.1 401 Unauthorized')
  })
})

interface Closing {
  /** The status line of what the server answered before closing, '' if nothing. */
  statusLine: string
}

/**
 * Sends a request head, then body bytes for as long as the socket stays open (`piece` at a time, each
 * after the last was written, `pauseMs` apart): resolves when the server closes the connection. A
 * server that never does leaves it open past `giveUpMs`, and that is the failure.
 */
function sendUntilClosed(url: string, head: string, piece: string, pauseMs: number, giveUpMs = 20_000): Promise<Closing> {
  const { port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(Number(port), '127.0.0.1')
    defer(() => socket.destroy())
    let received = ''
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1')
    })
    // A write after the server's close fails with EPIPE or ECONNRESET: the close is what is awaited.
    socket.on('error', () => {})
    const giveUp = setTimeout(() => reject(new Error(`the server still held the connection after ${giveUpMs} ms`)), giveUpMs)
    socket.on('close', () => {
      clearTimeout(giveUp)
      resolve({ statusLine: received.split('\r\n')[0] ?? '' })
    })
    const sendMore = () => {
      if (socket.destroyed) return
      socket.write(piece, () => setTimeout(sendMore, pauseMs))
    }
    socket.write(head, sendMore)
  })
}

function chunk(text: string): string {
  return `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`
}

const taskHead = (framing: string) =>
  `POST /task/request HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`

describe('the rest of an oversized body is read within bounds, then the connection is closed', () => {
  test('a client that keeps sending past oversized_body.discard_time is answered and cut off', async () => {
    const mls = server({ oversized_body: { discard_time: 1 } })
    // 64 KiB every 50 ms: never reaching discard_bytes within the time bound, never silent long enough for an idle timeout.
    const piece = 'x'.repeat(64 * 1024)
    const declared = await sendUntilClosed(mls.url, taskHead(`Content-Length: ${32 * MIB}`), piece, 50)
    expect(declared.statusLine).toBe('HTTP/1.1 413 Payload Too Large')
    const chunked = await sendUntilClosed(mls.url, taskHead('Transfer-Encoding: chunked'), chunk(piece), 50)
    expect(chunked.statusLine).toBe('HTTP/1.1 413 Payload Too Large')
  })

  test('an endless chunked body is read up to oversized_body.discard_bytes, then answered and cut off', async () => {
    const mls = server({ oversized_body: { discard_bytes: 4 * MIB } })
    const closing = await sendUntilClosed(mls.url, taskHead('Transfer-Encoding: chunked'), chunk('x'.repeat(64 * 1024)), 0)
    expect(closing.statusLine).toBe('HTTP/1.1 413 Payload Too Large')
  })

  test('a declared length past oversized_body.discard_bytes (10 GB) is answered and cut off without reading it', async () => {
    const mls = server()
    const closing = await sendUntilClosed(mls.url, taskHead('Content-Length: 10000000000'), 'x'.repeat(64 * 1024), 0)
    expect(closing.statusLine).toBe('HTTP/1.1 413 Payload Too Large')
  })
})
