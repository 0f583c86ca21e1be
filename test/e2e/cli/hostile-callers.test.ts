/**
 * A hostile pass over the callers' side: the SDK's createClient and `moonlight task/status/clients`
 * against a remote peer that breaks HTTP in the ways a broken proxy or a malicious server can — a
 * connection cut mid-body, a malformed chunked body, a gzip bomb, JSON nested past any stack, a page
 * where a task view belongs, a redirect to another origin, a server that never answers. The peers are
 * Bun.serve or raw node:net listeners on 127.0.0.1 (someone else's server, not ours); the CLI runs as a
 * real process, the SDK is the package's source. Then the real server through both, one documented
 * status after another.
 */
import { describe, expect, test } from 'bun:test'
import { createServer, type Socket } from 'node:net'
import { gzipSync } from 'node:zlib'
import { createClient, MoonlightError } from '../../../packages/sdk/src/index.ts'
import type { TaskView } from '../../../packages/sdk/src/wire.ts'
import { makeTestCa } from '../../support/certificates.ts'
import { expectOneLine, runCli } from '../../support/cli.ts'
import { startHttpAgent, TOKEN, testScope } from '../../support/helpers.ts'

const { defer, server: realServer } = testScope()

/** A remote peer on 127.0.0.1 speaking HTTP through Bun.serve, stopped after the test. */
function peer(fetch: (request: Request) => Response | Promise<Response>): string {
  const listener = Bun.serve({ hostname: '127.0.0.1', port: 0, idleTimeout: 0, fetch })
  defer(() => listener.stop(true))
  return `http://127.0.0.1:${listener.port}`
}

/** A peer that writes `reply` (raw bytes: any HTTP, or none) to each request, then closes the socket. */
async function rawPeer(reply: string): Promise<string> {
  const sockets = new Set<Socket>()
  const listener = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('data', () => socket.end(reply))
  })
  await new Promise<void>((listening) => listener.listen(0, '127.0.0.1', listening))
  defer(() => {
    for (const socket of sockets) socket.destroy()
    listener.close()
  })
  const address = listener.address()
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
}

/** Accepts the request and never answers. */
const neverAnswers = () => new Promise<Response>(() => {})

/** Headers at once, then one byte of body every 50 ms, forever. */
function trickles(): Response {
  let timer: ReturnType<typeof setInterval> | undefined
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      timer = setInterval(() => controller.enqueue(new Uint8Array([0x20])), 50)
    },
    cancel() {
      clearInterval(timer)
    },
  })
  return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } })
}

/** JSON nested deeper than any parser's or serializer's stack. */
const DEEP = `${'['.repeat(300_000)}${']'.repeat(300_000)}`
/** 300 KB of gzip that unpacks to 300 MB of spaces. */
const GZIP_BOMB = new Uint8Array(gzipSync(Buffer.alloc(300 * 1024 * 1024, 0x20)))

/** What a call did: the value it resolved with, or the MoonlightError it threw (anything else fails the test). */
async function outcome(call: () => Promise<unknown>): Promise<{ resolved: unknown } | { status: number; code: string; message: string }> {
  try {
    return { resolved: await call() }
  } catch (error) {
    if (!(error instanceof MoonlightError)) throw error
    return { status: error.status, code: error.code, message: error.message }
  }
}

const VIEW: TaskView = { task_id: 'abc', state: 'done', mode: 'async', region: 'r', node_id: 'n', attempts: [], submitted_at: 'x', finished_at: 'y' }

describe('the SDK client against a peer that breaks the connection or the body', () => {
  test('a connection closed mid-body and a malformed chunked body are MoonlightError unreachable on every call, never a bare TypeError', async () => {
    const midBody = await rawPeer('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\nx-moonlight-node: n\r\n\r\n{"a":')
    const badChunks = await rawPeer('HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n')
    for (const url of [midBody, badChunks]) {
      const client = createClient({ server: url, token: 'sometoken' })
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['task', () => client.task('r', 1)],
        ['broadcast', () => client.broadcast('r', 1)],
        ['submit', () => client.submit('r', 1)],
        ['get', () => client.get('abc')],
        ['get wait', () => client.get('abc', { wait: 1 })],
        ['result', () => client.result('abc')],
        ['cancel', () => client.cancel('abc')],
      ]
      for (const [name, call] of calls) {
        expect({ name, ...(await outcome(call)) }).toMatchObject({
          name,
          status: 0,
          code: 'unreachable',
          message: expect.stringContaining(`cannot reach ${url}`),
        })
      }
    }
  })

  test('JSON nested 300 000 deep where a view, a broadcast reply or an error belongs is unexpected_answer with the start of the body, never a RangeError', async () => {
    let status = 200
    const url = peer(() => new Response(DEEP, { status, headers: { 'content-type': 'application/json' } }))
    const client = createClient({ server: url })
    const calls: Array<[string, number, () => Promise<unknown>]> = [
      ['get', 200, () => client.get('abc')],
      ['cancel', 200, () => client.cancel('abc')],
      ['broadcast', 200, () => client.broadcast('r', 1)],
      ['submit', 202, () => client.submit('r', 1)],
      ['task, a server error', 503, () => client.task('r', 1)],
    ]
    for (const [name, answerStatus, call] of calls) {
      status = answerStatus
      expect({ name, ...(await outcome(call)) }).toEqual({ name, status, code: 'unexpected_answer', message: `HTTP ${status}: ${'['.repeat(200)}` })
    }
  })

  test('a gzip bomb is cut off at maxAnswerBytes (default 64 MiB) as answer_too_large; an answer under the limit comes through whole', async () => {
    let body = GZIP_BOMB
    const url = peer(() => new Response(body, { headers: { 'content-encoding': 'gzip', 'content-type': 'text/plain', 'x-moonlight-node': 'n' } }))
    const defaults = createClient({ server: url })
    expect(await outcome(() => defaults.task('r', 1))).toEqual({
      status: 200,
      code: 'answer_too_large',
      message: `the answer from ${url} passed 67108864 bytes (maxAnswerBytes): not read further`,
    })
    const small = createClient({ server: url, maxAnswerBytes: 1_000_000 })
    for (const call of [() => small.task('r', 1), () => small.get('abc'), () => small.broadcast('r', 1)]) {
      expect(await outcome(call)).toMatchObject({ status: 200, code: 'answer_too_large' })
    }
    body = new Uint8Array(gzipSync(Buffer.from('x'.repeat(1_000_000))))
    expect(await outcome(async () => ((await small.task('r', 1)).body as string).length)).toEqual({ resolved: 1_000_000 })
  })

  test('a plain 50 MB body to a client with a 1 MB limit is refused the same way, without reading it whole', async () => {
    const fifty = new Uint8Array(50 * 1024 * 1024).fill(0x20)
    const url = peer(() => new Response(fifty, { status: 202, headers: { 'content-type': 'application/json' } }))
    const client = createClient({ server: url, maxAnswerBytes: 1_000_000 })
    expect(await outcome(() => client.submit('r', 1))).toMatchObject({ status: 202, code: 'answer_too_large' })
  })
})

describe('the SDK client against a peer that never finishes answering', () => {
  test('get, result, submit and cancel give up after timeoutMs (get and result: after their wait) as unreachable, on silence and on a body that never ends', async () => {
    for (const answer of [neverAnswers, trickles]) {
      const url = peer(answer)
      const client = createClient({ server: url, timeoutMs: 300 })
      const calls: Array<[string, () => Promise<unknown>, string]> = [
        ['get', () => client.get('abc'), '0.3'],
        ['get wait', () => client.get('abc', { wait: 0.2 }), '0.5'],
        ['result wait', () => client.result('abc', { wait: 0.2 }), '0.5'],
        ['submit', () => client.submit('r', 1), '0.3'],
        ['cancel', () => client.cancel('abc'), '0.3'],
      ]
      for (const [name, call, seconds] of calls) {
        expect({ name, ...(await outcome(call)) }).toEqual({ name, status: 0, code: 'unreachable', message: `no answer from ${url} within ${seconds} s` })
      }
    }
  })

  test("cancel takes a signal, and a task's signal ends a body that never ends with the signal's reason", async () => {
    const url = peer(trickles)
    const client = createClient({ server: url })
    const reason = new Error('caller gave up')
    const controller = new AbortController()
    setTimeout(() => controller.abort(reason), 200)
    await expect(client.cancel('abc', { signal: controller.signal })).rejects.toBe(reason)
    const second = new AbortController()
    setTimeout(() => second.abort(reason), 200)
    await expect(client.task('r', 1, { signal: second.signal })).rejects.toBe(reason)
  })
})

describe('the SDK client and the CLI against redirects and odd headers', () => {
  /** A peer on another port that records what reaches it. */
  function elsewhere(): { url: string; seen: Array<{ path: string; authorization: string | null }> } {
    const seen: Array<{ path: string; authorization: string | null }> = []
    const url = peer((request) => {
      seen.push({ path: new URL(request.url).pathname, authorization: request.headers.get('authorization') })
      return Response.json(VIEW)
    })
    return { url, seen }
  }

  test('a 307 to another port never carries the token there, from the SDK or the CLI', async () => {
    const other = elsewhere()
    const url = peer((request) => new Response(null, { status: 307, headers: { location: `${other.url}${new URL(request.url).pathname}` } }))
    const client = createClient({ server: url, token: 'sometoken' })
    await outcome(() => client.get('abc'))
    await outcome(() => client.task('r', 1))
    await runCli(['task', 'cancel', 'abc', '--server', url, '--token', 'sometoken'])
    // All three reached the other port (fetch follows a 307 with the body), none with the token.
    expect(other.seen.map((request) => request.path)).toEqual(['/task/abc', '/task/request', '/task/abc'])
    expect(other.seen.filter((request) => request.authorization !== null)).toEqual([])
  })

  test('a 202 whose Location and status_url point at another port: the SDK keeps to its server, the id alone is used', async () => {
    const other = elsewhere()
    const url = peer((request) =>
      request.method === 'POST'
        ? Response.json(
            { task_id: 'abc', state: 'queued', status_url: `${other.url}/task/abc` },
            { status: 202, headers: { location: `${other.url}/task/abc` } },
          )
        : Response.json(VIEW),
    )
    const client = createClient({ server: url, token: 'sometoken' })
    const id = await client.submit('r', 1)
    expect(await client.get(id)).toEqual(VIEW)
    expect(other.seen).toEqual([])
  })

  test('a 401 and 429 with odd Retry-After values are one MoonlightError each, asked once (the SDK does not retry)', async () => {
    let asked = 0
    let answer = () => new Response('')
    const url = peer(() => {
      asked++
      return answer()
    })
    const client = createClient({ server: url, token: 'sometoken' })
    for (const [status, code, retryAfter] of [
      [401, 'unauthorized', '-1'],
      [429, 'too_many_failures', '99999999999999999999'],
      [429, 'too_many_failures', 'soon'],
    ] as const) {
      answer = () => Response.json({ error: 'no', code, retry_after: retryAfter }, { status, headers: { 'retry-after': retryAfter } })
      asked = 0
      expect(await outcome(() => client.task('r', 1))).toEqual({ status, code, message: 'no' })
      expect(asked).toBe(1)
    }
  })
})

describe('moonlight task, status and clients against a peer that breaks the body', () => {
  test('a gzip bomb is cut off at 64 MiB by default, and at --max-answer-bytes: exit 1, one line', async () => {
    const url = peer(() => new Response(GZIP_BOMB, { headers: { 'content-encoding': 'gzip', 'content-type': 'application/json', 'x-moonlight-node': 'n' } }))
    const line = (limit: number) => `answer from ${url} passed ${limit} bytes: not read further`
    const task = await runCli(['task', '--payload', '1', '--server', url])
    expect([task.code, task.stdout, expectOneLine(task.stderr)]).toEqual([1, '', `moonlight task: ${line(67108864)}`])
    const status = await runCli(['status', '--server', url])
    expect([status.code, expectOneLine(status.stderr)]).toEqual([1, `moonlight status: ${line(67108864)}`])
    for (const args of [
      ['task', '--payload', '1'],
      ['task', 'get', 'abc'],
    ]) {
      const small = await runCli([...args, '--max-answer-bytes', '1000000', '--server', url])
      expect([args[1], small.code, expectOneLine(small.stderr)]).toEqual([args[1], 1, `moonlight task: ${line(1000000)}`])
    }
    const bad = await runCli(['task', '--payload', '1', '--max-answer-bytes', 'lots', '--server', url])
    expect([bad.code, expectOneLine(bad.stderr)]).toEqual([
      2,
      'moonlight task: --max-answer-bytes must be a whole number, got "lots" (see moonlight task --help)',
    ])
  })

  test('task cancel: a 200 that is not a task view (a page, an array, null, JSON nested past the stack) is unexpected_answer, never "cancelled"', async () => {
    let body = '<html>OK</html>'
    const url = peer(() => new Response(body, { status: 200 }))
    for (const page of ['<html>OK</html>', '[1]', 'null', '{"error":5}', DEEP]) {
      body = page
      for (const json of [[], ['--json']]) {
        const { code, stdout, stderr } = await runCli(['task', 'cancel', 'abc', ...json, '--server', url])
        expect([page.slice(0, 20), json, code, stdout, expectOneLine(stderr)]).toEqual([
          page.slice(0, 20),
          json,
          1,
          '',
          'moonlight task: unexpected answer to task cancel (HTTP 200): is this a Moonlight server?',
        ])
      }
    }
    body = JSON.stringify(VIEW)
    const real = await runCli(['task', 'cancel', 'abc', '--server', url])
    expect([real.code, real.stdout]).toEqual([0, 'cancelled abc\n'])
  })

  test('a connection closed mid-body, a malformed chunked body and bytes that are not HTTP: one line, exit 1', async () => {
    const peers = [
      await rawPeer('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"a":'),
      await rawPeer('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n'),
      await rawPeer('SSH-2.0-OpenSSH_9.6\r\n'),
    ]
    for (const url of peers) {
      for (const args of [['task', '--payload', '1'], ['status'], ['task', 'get', 'abc']]) {
        const { code, stderr } = await runCli([...args, '--server', url])
        expect([args[1], code, expectOneLine(stderr)]).toEqual([args[1], 1, expect.stringContaining(`: cannot reach ${url}: `)])
      }
    }
  })

  test('an https server whose certificate another CA signed, with --ca: one line naming the certificate, exit 1', async () => {
    const theirs = makeTestCa('Their CA')
    const ours = makeTestCa('Our CA')
    const issued = theirs.issue('hostile')
    const listener = Bun.serve({ hostname: '127.0.0.1', port: 0, tls: { cert: issued.cert, key: issued.key }, fetch: () => Response.json({}) })
    defer(() => listener.stop(true))
    const url = `https://127.0.0.1:${listener.port}`
    for (const args of [['status'], ['task', '--payload', '1']]) {
      const { code, stderr } = await runCli([...args, '--server', url, '--ca', ours.caPath])
      expect([code, expectOneLine(stderr)]).toEqual([1, expect.stringContaining(`cannot reach ${url}: certificate not trusted`)])
    }
  })
})

describe('the real server through the SDK and the CLI: each documented status', () => {
  test('200, an agent 404, 400, 401, 404 unknown_task, 409 task_ended, 422 idempotency_mismatch, 503 no_client, 502, 504', async () => {
    const mls = realServer()
    await startHttpAgent(mls.url, {
      nodeId: 'ok-1',
      region: 'us-east-1',
      work: (payload) => {
        const { kind } = payload as { kind?: string }
        if (kind === 'missing') return Response.json({ error: 'no such user' }, { status: 404 })
        if (kind === 'boom') return Response.json({ error: 'boom' }, { status: 500 })
        if (kind === 'slow') return new Promise((answer) => setTimeout(() => answer(Response.json({ late: true })), 3000))
        return Response.json({ echo: payload })
      },
    }).then((agent) => defer(agent.stop))
    const client = createClient({ server: mls.url, token: TOKEN })
    const anonymous = createClient({ server: mls.url, token: 'wrong-token' })
    const done = await client.submit('us-east-1', { n: 1 })
    expect((await client.get(done, { wait: 5 })).state).toBe('done')
    await client.submit('us-east-1', { n: 1 }, { idempotencyKey: 'k-1' })

    const sdk: Array<[string, () => Promise<unknown>, unknown]> = [
      ['200', async () => (await client.task('us-east-1', { n: 2 })).body, { resolved: { echo: { n: 2 } } }],
      ['agent 404', async () => (await client.task('us-east-1', { kind: 'missing' })).status, { resolved: 404 }],
      ['400', () => client.task('us-east-1', 1, { fallback: 'sideways' as 'none' }), { status: 400, code: 'invalid_body' }],
      ['401', () => anonymous.task('us-east-1', 1), { status: 401, code: 'unauthorized' }],
      ['404', () => client.get('no-such-task'), { status: 404, code: 'unknown_task' }],
      ['409', () => client.cancel(done), { status: 409, code: 'task_ended' }],
      ['422', () => client.submit('us-east-1', { n: 2 }, { idempotencyKey: 'k-1' }), { status: 422, code: 'idempotency_mismatch' }],
      ['503', () => client.task('mars', 1, { fallback: 'none' }), { status: 503, code: 'no_client' }],
      ['502', () => client.task('us-east-1', { kind: 'boom' }, { retry: false }), { status: 502, code: 'all_attempts_failed' }],
      ['504', () => client.task('us-east-1', { kind: 'slow' }, { timeout: 0.3 }), { status: 504, code: 'timeout' }],
    ]
    for (const [name, call, expected] of sdk) {
      expect({ name, ...(await outcome(call)) }).toMatchObject({ name, ...(expected as object) })
    }

    // The CLI: exit 0, or exit 1 with one line naming the status.
    const cli: Array<[string[], number, string]> = [
      [['task', '--region', 'us-east-1', '--payload', '{"n":3}'], 0, ''],
      [['task', '--region', 'us-east-1', '--payload', '{"kind":"missing"}'], 1, '{"error":"no such user"} (HTTP 404)'],
      [['task', '--region', 'us-east-1', '--fallback', 'sideways', '--payload', '1'], 2, '--fallback must be "parent" or "none"'],
      [['task', '--region', 'us-east-1', '--payload', '1', '--token', 'wrong-token'], 1, '(HTTP 401); the token given by --token or $MLS_TOKEN was refused'],
      [['task', 'get', 'no-such-task'], 1, '(HTTP 404)'],
      [['task', 'cancel', done], 1, '(HTTP 409)'],
      [['task', '--region', 'us-east-1', '--idempotency-key', 'k-1', '--async', '--payload', '{"n":9}'], 1, '(HTTP 422)'],
      [['task', '--region', 'mars', '--fallback', 'none', '--payload', '1'], 1, 'no healthy client in region "mars"'],
      [['task', '--region', 'us-east-1', '--no-retry', '--payload', '{"kind":"boom"}'], 1, 'every attempt failed (1): ok-1 answered 500'],
      [['task', '--region', 'us-east-1', '--payload', '{"kind":"slow"}', '--task-timeout', '0.3'], 1, '(HTTP 504)'],
      [['status'], 0, ''],
      [['clients'], 0, ''],
      [['cluster'], 0, ''],
    ]
    for (const [args, code, part] of cli) {
      const token = args.includes('--token') || args[0] === 'status' ? [] : ['--token', TOKEN]
      const run = await runCli([...args, '--server', mls.url, ...token])
      expect([args.join(' '), run.code]).toEqual([args.join(' '), code])
      if (code !== 0) expect(expectOneLine(run.stderr)).toContain(part)
    }
  })
})
