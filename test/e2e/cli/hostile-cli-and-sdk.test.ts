/**
 * A hostile pass over the clients: what a broken or malicious *remote* server can do to
 * `moonlight task/status/clients/cluster` and to the SDK's createClient/createAgent, and what bad
 * config inputs (mls.json, tokens_file) do to `moonlight config check`. The remote servers here are
 * fakes written with Bun.serve on 127.0.0.1 (they stand for someone else's server, not ours); the CLI
 * runs as a real process and the SDK is the real package source.
 */
import { describe, expect, test } from 'bun:test'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createAgent, createClient, MoonlightError } from '../../../packages/sdk/src/index.ts'
import type { TaskView } from '../../../packages/sdk/src/wire.ts'
import { ensureStopped, expectOneLine, runCli } from '../../support/cli.ts'
import { postTask, spawnServer, startCli, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()

/** A fake remote server on 127.0.0.1, stopped after the test. */
function fakeServer(fetch: (request: Request) => Response | Promise<Response>): string {
  const fake = Bun.serve({ hostname: '127.0.0.1', port: 0, idleTimeout: 0, fetch })
  defer(() => fake.stop(true))
  return `http://127.0.0.1:${fake.port}`
}

/** Accepts the request and never answers. */
const neverAnswers = () => new Promise<Response>(() => {})

/** Answers 200 at once, then sends its body a byte at a time forever: never idle, never done. */
function trickles(): Response {
  let timer: ReturnType<typeof setInterval> | undefined
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      timer = setInterval(() => controller.enqueue(new TextEncoder().encode(' ')), 100)
    },
    cancel() {
      clearInterval(timer)
    },
  })
  return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } })
}

describe('moonlight status, clients and cluster against a server that never finishes answering', () => {
  for (const command of ['status', 'clients', 'cluster']) {
    test(`${command} --timeout gives up on a server that never answers, and on one whose body never ends: exit 1, one line`, async () => {
      for (const answer of [neverAnswers, trickles]) {
        const url = fakeServer(answer)
        const token = command === 'status' ? [] : ['--token', 'sometoken']
        const { code, stderr } = await runCli([command, '--server', url, ...token, '--timeout', '0.5'])
        expect(code).toBe(1)
        expect(expectOneLine(stderr)).toBe(`moonlight ${command}: no answer from ${url} within 0.5 s`)
      }
    })
  }

  test('task get and task cancel --timeout give up on a server that never answers; task get waits its --wait on top', async () => {
    for (const answer of [neverAnswers, trickles]) {
      const url = fakeServer(answer)
      for (const args of [
        ['task', 'get', 't-1', '--timeout', '0.5'],
        ['task', 'cancel', 't-1', '--timeout', '0.5'],
      ]) {
        const { code, stderr } = await runCli([...args, '--server', url, '--token', 'sometoken'])
        expect([args[1], code, expectOneLine(stderr)]).toEqual([args[1], 1, `moonlight task: no answer from ${url} within 0.5 s`])
      }
      // A long poll is given its --wait before the timeout starts counting.
      const { code, stderr } = await runCli(['task', 'get', 't-1', '--wait', '0.5', '--timeout', '0.5', '--server', url, '--token', 'sometoken'])
      expect([code, expectOneLine(stderr)]).toEqual([1, `moonlight task: no answer from ${url} within 1 s`])
    }
  })

  test('without --timeout, status gives up after its documented default of 10 s', async () => {
    const url = fakeServer(neverAnswers)
    const { code, stderr } = await runCli(['status', '--server', url])
    expect(code).toBe(1)
    expect(expectOneLine(stderr)).toBe(`moonlight status: no answer from ${url} within 10 s`)
  })

  test("a redirect loop is one line saying so, without Bun's advice about fetch options", async () => {
    const url = fakeServer((request) => new Response(null, { status: 302, headers: { location: `${new URL(request.url).pathname}x` } }))
    for (const args of [['status'], ['task', '--payload', '1'], ['clients', '--token', 'sometoken']]) {
      const { code, stderr } = await runCli([...args, '--server', url])
      expect([args[0], code, expectOneLine(stderr)]).toEqual([
        args[0],
        1,
        `moonlight ${args[0]}: cannot reach ${url}: TooManyRedirects: The response redirected too many times`,
      ])
    }
  })

  test('a bad --timeout is bad usage, exit 2', async () => {
    const { code, stderr } = await runCli(['status', '--server', 'http://127.0.0.1:9', '--timeout', 'soon'])
    expect(code).toBe(2)
    expect(expectOneLine(stderr)).toContain('--timeout must be a positive number of seconds')
  })
})

describe('moonlight task against a server that answers HTML or the wrong shape', () => {
  const html = (status: number) => () => new Response('<html><body><h1>Bad Gateway</h1></body></html>', { status, headers: { 'content-type': 'text/html' } })

  test('--async, task get and task cancel --json: an HTML page where JSON belongs is one clear line, exit 1, never a JSON parser error', async () => {
    const cases: Array<[string[], number, string]> = [
      [['task', '--async', '--payload', '1'], 202, 'moonlight task: unexpected answer to an async task (HTTP 202): is this a Moonlight server?'],
      [['task', 'get', 'abc'], 202, 'moonlight task: unexpected answer to task get (HTTP 202): is this a Moonlight server?'],
      [['task', 'get', 'abc', '--wait', '1'], 202, 'moonlight task: unexpected answer to task get (HTTP 202): is this a Moonlight server?'],
      [['task', 'cancel', 'abc', '--json'], 200, 'moonlight task: unexpected answer to task cancel (HTTP 200): is this a Moonlight server?'],
    ]
    for (const [args, status, line] of cases) {
      const url = fakeServer(html(status))
      const { code, stderr } = await runCli([...args, '--server', url])
      expect([args.join(' '), code, expectOneLine(stderr)]).toEqual([args.join(' '), 1, line])
    }
  })

  test('an HTML error page, a JSON error without code, a body that never ends (--timeout) and a 200 of the wrong shape to --broadcast: one line each, exit 1', async () => {
    const cases: Array<[() => Response | Promise<Response>, string[], string]> = [
      [html(502), [], '<html><body><h1>Bad Gateway</h1></body></html> (HTTP 502)'],
      [() => Response.json({ error: 'boom' }, { status: 500 }), [], '{"error":"boom"} (HTTP 500)'],
      [() => Response.json({ hello: 1 }), ['--broadcast'], 'unexpected answer to a broadcast (HTTP 200)'],
    ]
    for (const [answer, flags, line] of cases) {
      const url = fakeServer(answer)
      const { code, stderr } = await runCli(['task', '--payload', '1', ...flags, '--server', url])
      expect([code, expectOneLine(stderr)]).toEqual([1, `moonlight task: ${line}`])
    }
    const url = fakeServer(trickles)
    const { code, stderr } = await runCli(['task', '--payload', '1', '--timeout', '0.5', '--server', url])
    expect([code, expectOneLine(stderr)]).toEqual([1, `moonlight task: no answer from ${url} within 0.5 s`])
  })

  test('a JSON 202 of the wrong shape to task get is the same line; a real view still exits 3', async () => {
    let body: unknown = { hello: 1 }
    const url = fakeServer(() => Response.json(body, { status: 202 }))
    const wrong = await runCli(['task', 'get', 'abc', '--server', url])
    expect([wrong.code, expectOneLine(wrong.stderr)]).toEqual([1, 'moonlight task: unexpected answer to task get (HTTP 202): is this a Moonlight server?'])
    body = {
      task_id: 'abc',
      state: 'running',
      mode: 'async',
      region: 'r',
      node_id: null,
      attempts: [],
      submitted_at: '2026-01-01T00:00:00.000Z',
      finished_at: null,
    }
    const running = await runCli(['task', 'get', 'abc', '--server', url])
    expect([running.code, expectOneLine(running.stderr)]).toEqual([3, 'moonlight task: task abc is running; ask again later, or pass --wait S'])
  })
})

describe('the SDK client against a server that answers the wrong thing', () => {
  /** What a call did: the value it resolved with, or the MoonlightError it threw (anything else is a failure). */
  async function outcome(call: () => Promise<unknown>): Promise<{ resolved: unknown } | { status: number; code: string; message: string }> {
    try {
      return { resolved: await call() }
    } catch (error) {
      if (!(error instanceof MoonlightError)) throw error
      return { status: error.status, code: error.code, message: error.message }
    }
  }

  test('broadcast, submit, get and cancel throw MoonlightError for an answer of the wrong shape, never return it as data', async () => {
    let answer = () => new Response('')
    const url = fakeServer(() => answer())
    const client = createClient({ server: url, token: 'sometoken' })
    const html = (status: number) => () => new Response('<html>Bad Gateway</html>', { status, headers: { 'content-type': 'text/html' } })
    const json = (body: unknown, status: number) => () => Response.json(body, { status })
    const cases: Array<[string, () => Response, () => Promise<unknown>, number]> = [
      ['broadcast, a proxy 502 page', html(502), () => client.broadcast('r', 1), 502],
      ['broadcast, a 200 without results', json({ hello: 1 }, 200), () => client.broadcast('r', 1), 200],
      ['broadcast, a 502 JSON error without code', json({ error: 'bad gateway' }, 502), () => client.broadcast('r', 1), 502],
      ['submit, a 202 page', html(202), () => client.submit('r', 1), 202],
      ['submit, a 202 without task_id', json({}, 202), () => client.submit('r', 1), 202],
      ['get, a 200 page', html(200), () => client.get('abc'), 200],
      ['get, a 200 array', json([1], 200), () => client.get('abc'), 200],
      ['get with wait, a 202 page', html(202), () => client.get('abc', { wait: 1 }), 202],
      ['cancel, a 200 page', html(200), () => client.cancel('abc'), 200],
    ]
    for (const [name, reply, call, status] of cases) {
      answer = reply
      const result = await outcome(call)
      expect({ name, ...result }).toMatchObject({ name, status, code: 'unexpected_answer', message: expect.stringContaining(`HTTP ${status}`) })
    }
  })

  test('a real broadcast reply, accepted task and task view still come through', async () => {
    const view: TaskView = { task_id: 'abc', state: 'done', mode: 'async', region: 'r', node_id: 'n', attempts: [], submitted_at: 'x', finished_at: 'y' }
    let answer = () => new Response('')
    const url = fakeServer(() => answer())
    const client = createClient({ server: url })
    answer = () =>
      Response.json(
        { task_id: 't', region: 'r', targets: 1, answered: 0, results: [{ node_id: 'n', protocol: 'ws', status: 502, error: 'x' }] },
        { status: 502 },
      )
    expect((await client.broadcast('r', 1)).results).toHaveLength(1)
    answer = () => Response.json({ task_id: 'abc', state: 'queued', status_url: '/task/abc' }, { status: 202 })
    expect(await client.submit('r', 1)).toBe('abc')
    answer = () => Response.json(view)
    expect(await client.get('abc')).toEqual(view)
    expect(await client.cancel('abc')).toEqual(view)
  })

  test('a JSON error without code, an HTML error page and a redirect loop each throw a MoonlightError saying what came back', async () => {
    let answer = () => new Response('')
    const url = fakeServer(() => answer())
    const client = createClient({ server: url })
    answer = () => Response.json({ error: 'boom' }, { status: 500 })
    expect(await outcome(() => client.task('r', 1))).toEqual({ status: 500, code: 'unexpected_answer', message: 'HTTP 500: {"error":"boom"}' })
    answer = () => new Response('<html><body>Service Unavailable</body></html>', { status: 503 })
    expect(await outcome(() => client.task('r', 1))).toEqual({
      status: 503,
      code: 'unexpected_answer',
      message: 'HTTP 503: <html><body>Service Unavailable</body></html>',
    })
    answer = () => new Response(null, { status: 302, headers: { location: '/again' } })
    expect(await outcome(() => client.task('r', 1))).toEqual({
      status: 0,
      code: 'unreachable',
      message: `cannot reach ${url}: TooManyRedirects: The response redirected too many times`,
    })
  })
})

describe('the SDK agent against a hostile WebSocket server', () => {
  interface FakeWsServer {
    url: string
    /** Every text message the agent sent, parsed. */
    received: Array<{ type: string; payload?: Record<string, unknown> }>
  }

  /** A fake remote server: on the agent's `register` it answers `onRegister(send)`; it records everything else. */
  function fakeWsServer(onRegister: (send: (frame: string | Uint8Array) => void) => void): FakeWsServer {
    const received: FakeWsServer['received'] = []
    const fake = Bun.serve({
      hostname: '127.0.0.1',
      port: 0,
      fetch: (request, server) => (server.upgrade(request) ? undefined : new Response('upgrade', { status: 426 })),
      websocket: {
        message(ws, data) {
          const message = JSON.parse(String(data)) as FakeWsServer['received'][number]
          if (message.type === 'register') onRegister((frame) => ws.send(frame))
          else received.push(message)
        },
      },
    })
    defer(() => fake.stop(true))
    return { url: `http://127.0.0.1:${fake.port}`, received }
  }

  const registered = (heartbeatInterval: number) =>
    JSON.stringify({ type: 'registered', payload: { node_id: 'n', region: 'r', weight: 1, heartbeat_interval: heartbeatInterval, server_time: '' } })

  function startAgent(url: string, handler: (payload: unknown) => unknown, concurrency = 16) {
    const warnings: string[] = []
    const agent = createAgent({
      servers: url,
      token: 'sometoken',
      region: 'r',
      nodeId: 'n',
      concurrency,
      handler,
      logger: { info: () => {}, warn: (line) => warnings.push(line) },
    })
    defer(async () => {
      await agent.stop()
      await agent.done.catch(() => {})
    })
    return { agent, warnings }
  }

  test('a heartbeat_interval beyond what a timer can hold (about 24.8 days) does not become a heartbeat every millisecond', async () => {
    const fake = fakeWsServer((send) => {
      send(registered(10_000_000))
      // A task after the registration: once its answer is back, the agent has been registered for a while.
      send(JSON.stringify({ type: 'task', task_id: 'after', payload: 1 }))
    })
    const { agent } = startAgent(fake.url, async () => {
      await Bun.sleep(300)
      return 'done'
    })
    await agent.ready
    await waitFor(() => fake.received.some((message) => message.type === 'task_response'), 'the task answered')
    expect(fake.received.filter((message) => message.type === 'heartbeat')).toEqual([])
  })

  test('a `registered` sent again and again does not start a heartbeat timer each time: one heartbeat per interval', async () => {
    let sendTask: (() => void) | undefined
    const fake = fakeWsServer((send) => {
      for (let i = 0; i < 5; i++) send(registered(0.2))
      sendTask = () => send(JSON.stringify({ type: 'task', task_id: 'tick', payload: 1 }))
    })
    const { agent } = startAgent(fake.url, (payload) => payload)
    await agent.ready
    // On the first heartbeat, a task: its answer comes back long before the next interval, so
    // everything received before it is what the agent's timers sent at that one tick.
    await waitFor(() => fake.received.some((message) => message.type === 'heartbeat'), 'a heartbeat')
    sendTask?.()
    await waitFor(() => fake.received.some((message) => message.type === 'task_response'), 'the task answered')
    const beforeAnswer = fake.received.slice(
      0,
      fake.received.findIndex((message) => message.type === 'task_response'),
    )
    expect(beforeAnswer.map((message) => message.type)).toEqual(['heartbeat'])
  })

  test('a server that registers the agent, then never says a word again (no ack, no ping), is left after 3 intervals and registered with again', async () => {
    let registrations = 0
    const fake = fakeWsServer((send) => {
      registrations++
      send(registered(0.1))
    })
    const { agent, warnings } = startAgent(fake.url, () => 'ok')
    await agent.ready
    await waitFor(() => registrations >= 2, 'a second registration')
    expect(warnings[0]).toMatch(/^\[agent\] disconnected: no word from the server for 0\.3 s; reconnecting in [0-9.]+ s$/)
    expect(fake.received.filter((message) => message.type === 'heartbeat').length).toBeGreaterThan(0)
  })

  test('garbage frames, tasks without a task_id and binary frames are ignored with a warning; the agent still answers, and a 10 000-character task_id comes back whole', async () => {
    const longId = 'x'.repeat(10_000)
    const fake = fakeWsServer((send) => {
      send(registered(30))
      for (const frame of [
        'not json',
        'null',
        '[]',
        '{"type":"task"}',
        '{"type":"task","task_id":5}',
        '{"type":"task","task_id":""}',
        '{"type":"registered"}',
        '{"type":"error"}',
        '{"type":"nope"}',
      ])
        send(frame)
      send(new Uint8Array([0, 1, 2, 255]))
      send(JSON.stringify({ type: 'task', task_id: longId, payload: { n: 2 } }))
      send(JSON.stringify({ type: 'task', task_id: 'no-payload' }))
    })
    const { agent, warnings } = startAgent(fake.url, (payload) => ({ got: payload ?? 'nothing' }))
    await agent.ready
    await waitFor(() => fake.received.filter((message) => message.type === 'task_response').length === 2, 'both tasks answered')
    const answers = fake.received.filter((message) => message.type === 'task_response').map((message) => message.payload)
    expect(answers).toContainEqual({ task_id: longId, status: 200, response: { got: { n: 2 } } })
    expect(answers).toContainEqual({ task_id: 'no-payload', status: 200, response: { got: 'nothing' } })
    expect(warnings.filter((line) => line.startsWith('[agent] ignored an unexpected message'))).toHaveLength(10)
  })

  test('a flood of 60 tasks to an agent with concurrency 3: never more than 3 run at once, and every one is answered', async () => {
    const fake = fakeWsServer((send) => {
      send(registered(30))
      for (let i = 0; i < 60; i++) send(JSON.stringify({ type: 'task', task_id: `t${i}`, payload: i }))
    })
    let running = 0
    let most = 0
    const { agent } = startAgent(
      fake.url,
      async (payload) => {
        most = Math.max(most, ++running)
        await Bun.sleep(5)
        running--
        return payload
      },
      3,
    )
    await agent.ready
    await waitFor(() => fake.received.filter((message) => message.type === 'task_response').length === 60, 'every task answered')
    expect(most).toBe(3)
    const ids = fake.received.filter((message) => message.type === 'task_response').map((message) => message.payload?.task_id)
    expect(new Set(ids).size).toBe(60)
  })
})

describe('mls.json: intervals longer than a timer can hold', () => {
  test('ws.heartbeat_interval of 35 days does not make the server ping every millisecond', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mls-hostile-config-'))
    const path = join(dir, 'mls.json')
    // register_timeout: the server itself ends the observation by closing the unregistered socket.
    writeFileSync(path, JSON.stringify({ tokens: [TOKEN], ws: { heartbeat_interval: 3_000_000, connection_check_interval: 3_000_000, register_timeout: 0.5 } }))
    const mls = await spawnServer(['--config', path, '--port', '0', '--host', '127.0.0.1'])
    defer(() => ensureStopped(mls))
    expect(mls.url).not.toBe('')
    const { hostname, port } = new URL(mls.url)
    const socket = connect(Number(port), hostname)
    defer(() => socket.destroy())
    let received = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk])
    })
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    socket.write(
      `GET /ws HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
    await closed
    const head = received.indexOf('\r\n\r\n')
    expect(received.subarray(0, head).toString()).toStartWith('HTTP/1.1 101')
    // Server frames are unmasked: opcode 0x9 is a ping; walk the frames after the handshake.
    const opcodes: number[] = []
    for (let at = head + 4; at + 2 <= received.length; ) {
      const length = received[at + 1]! & 0x7f
      const [size, start] = length === 126 ? [received.readUInt16BE(at + 2), at + 4] : [length, at + 2]
      opcodes.push(received[at]! & 0x0f)
      at = start + size
    }
    expect(opcodes.filter((opcode) => opcode === 0x9)).toEqual([])
  })
})

describe('moonlight config check on hostile mls.json files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mls-hostile-check-'))
  const write = (name: string, text: string | Uint8Array) => {
    const path = join(dir, name)
    writeFileSync(path, text)
    return path
  }

  test('keys named like Object.prototype members (constructor, toString, __proto__) are unknown keys, warned about like any other', async () => {
    const path = write('proto-keys.json', '{"constructor": 1, "toString": {"a": 1}, "__proto__": {"port": 1}, "ws": {"hasOwnProperty": true, "valueOf": 2}}')
    const { code, stdout } = await runCli(['config', 'check', path, '--json'])
    expect(code).toBe(0)
    const checked = JSON.parse(stdout) as { unknown_keys: string[]; config: { port: number } }
    expect(checked.unknown_keys.sort()).toEqual(['__proto__', 'constructor', 'toString', 'ws.hasOwnProperty', 'ws.valueOf'])
    expect(checked.config.port).toBe(8080)
  })

  test('a byte-order mark (as Windows editors save UTF-8) is not an error: the file is read as without it', async () => {
    const path = write('bom.json', '\ufeff{"port": 9191}')
    const { code, stdout, stderr } = await runCli(['config', 'check', path, '--json'])
    expect([code, stderr]).toEqual([0, ''])
    expect((JSON.parse(stdout) as { config: { port: number } }).config.port).toBe(9191)
  })

  test('a comment or a deep array is one line, wrong types in every section are each named by key: never a crash', async () => {
    const comment = await runCli(['config', 'check', write('comment.json', '{"port": 8080 // the port\n}')])
    expect([comment.code, expectOneLine(comment.stderr)]).toEqual([
      1,
      expect.stringMatching(/^moonlight config check: config .*comment\.json is not valid JSON at line 1, column 15: /),
    ])
    const deep = await runCli(['config', 'check', write('deep.json', `${'['.repeat(100_000)}${']'.repeat(100_000)}`)])
    expect([deep.code, expectOneLine(deep.stderr)]).toEqual([1, expect.stringMatching(/^moonlight config check: invalid config .*deep\.json \(1 problem\)$/)])
    const types = await runCli([
      'config',
      'check',
      write('types.json', JSON.stringify({ port: '8080', ws: [], html: 1, health: 'x', tokens: { a: 1 }, cluster: true, task_timeout: '30', tokens_file: 5 })),
    ])
    expect(types.code).toBe(1)
    for (const key of ['port', 'ws', 'html', 'health', 'tokens', 'cluster', 'task_timeout', 'tokens_file']) expect(types.stdout).toContain(`\n  ${key}: `)
  })

  test('a binary tokens_file (a key, an archive) is refused in one line naming the first line that is not text, never taken as tokens', async () => {
    const binary = new Uint8Array([
      0x1f, 0x8b, 0x08, 0x00, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x0a, 0xff, 0xfe, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    ])
    const cases: Array<[string, string | Uint8Array, number]> = [
      ['tokens.gz', binary, 1],
      ['tokens-nul', 'token-number-one\ntoken\u0000number-two\n', 2],
      [
        'tokens-invalid-utf8',
        new Uint8Array([...new TextEncoder().encode('token-number-one\n'), 0x74, 0x6f, 0x6b, 0xc3, 0x28, 0x65, 0x6e, 0x2d, 0x32, 0x0a]),
        2,
      ],
    ]
    for (const [name, contents, line] of cases) {
      const tokens = write(name, contents)
      const path = write(`${name}.json`, JSON.stringify({ tokens_file: name }))
      const { code, stderr } = await runCli(['config', 'check', path])
      expect([name, code, expectOneLine(stderr)]).toEqual([
        name,
        1,
        `moonlight config check: tokens_file ${tokens} is not text (line ${line} has a control character or is not UTF-8): it holds one token per line`,
      ])
    }
  })

  test('a tokens_file that is a directory is one line, exit 1; one with a BOM, CRLF lines and spaces around tokens is accepted', async () => {
    mkdirSync(join(dir, 'tokens-dir'))
    const dirConfig = write('dir.json', JSON.stringify({ tokens_file: 'tokens-dir' }))
    const refused = await runCli(['config', 'check', dirConfig])
    expect([refused.code, expectOneLine(refused.stderr)]).toEqual([
      1,
      `moonlight config check: cannot read tokens_file ${join(dir, 'tokens-dir')}: EISDIR: illegal operation on a directory, read`,
    ])
    write('tokens-crlf', '\ufefftoken-number-one  \r\n\t token-number-two\r\n')
    const accepted = await runCli(['config', 'check', write('crlf.json', JSON.stringify({ tokens_file: 'tokens-crlf' }))])
    expect(accepted.code).toBe(0)
  })
})

describe('moonlight agent --exec with a command whose output has no end', () => {
  const { server } = testScope()

  async function execAgent(nodeId: string, command: string, extra: string[] = []) {
    const mls = server({ retry_count: 0, task_timeout: 30 })
    const agent = startCli(['agent', '--server', mls.url, '--token', TOKEN, '--region', 'us-east-1', '--node-id', nodeId, '--exec', command, ...extra])
    defer(() => ensureStopped(agent))
    await agent.waitForOutput(`registered as ${nodeId}`)
    return mls
  }

  test("stdout beyond 16 MiB kills the command and answers 500 saying so, instead of filling the agent's memory", async () => {
    // `yes` never ends on its own: only the limit stops it.
    const mls = await execAgent('flood-1', 'yes')
    const result = await postTask(mls.url, { region: 'us-east-1', payload: {}, mode: 'broadcast' })
    expect(result.json().results).toEqual([
      {
        node_id: 'flood-1',
        protocol: 'ws',
        status: 500,
        response: { error: "the command's output passed --exec-max-output (16777216 bytes) and it was killed", too_large: true },
      },
    ])
  })

  test('--exec-max-output sets the bound: under it the whole output is the answer, past it the command is killed', async () => {
    const mls = await execAgent('bounded-1', 'head -c "$(cat)" /dev/zero | tr "\\0" x', ['--exec-max-output', '1000'])
    const under = await postTask(mls.url, { region: 'us-east-1', payload: 1000 })
    expect([under.status, under.json()]).toEqual([200, 'x'.repeat(1000)])
    const over = await postTask(mls.url, { region: 'us-east-1', payload: 1001, mode: 'broadcast' })
    expect(over.json().results).toEqual([
      {
        node_id: 'bounded-1',
        protocol: 'ws',
        status: 500,
        response: { error: "the command's output passed --exec-max-output (1000 bytes) and it was killed", too_large: true },
      },
    ])
  })

  test('a stderr without end is cut to its start: the error is the first 64 KiB', async () => {
    const mls = await execAgent('noisy-1', 'head -c 50000000 /dev/zero | tr "\\0" e >&2; exit 3')
    const result = await postTask(mls.url, { region: 'us-east-1', payload: {}, mode: 'broadcast' })
    expect(result.json().results).toEqual([{ node_id: 'noisy-1', protocol: 'ws', status: 500, response: { error: 'e'.repeat(64 * 1024), exit_code: 3 } }])
  })

  test('binary stdout arrives as text, each byte that is not UTF-8 as U+FFFD, never a crash', async () => {
    const mls = await execAgent('bytes-1', "printf 'ok\\377\\376\\000end'")
    const result = await postTask(mls.url, { region: 'us-east-1', payload: {} })
    expect([result.status, result.json()]).toEqual([200, 'ok\ufffd\ufffd\u0000end'])
  })
})

describe('the SDK HTTP agent against a server whose heartbeat reply asks for an absurd client_ttl', () => {
  /** A fake remote server answering every heartbeat `ok` with this client_ttl; counts them. */
  function fakeHeartbeatServer(clientTtl: number) {
    const heartbeats: number[] = []
    const url = fakeServer(async (request) => {
      heartbeats.push(Date.now())
      await request.text()
      return Response.json({ status: 'ok', server_time: new Date().toISOString(), node_id: 'n', region: 'r', weight: 1, client_ttl: clientTtl })
    })
    return { url, heartbeats }
  }

  function startHttpAgent(url: string) {
    const lines: string[] = []
    const agent = createAgent({
      servers: url,
      token: 'sometoken',
      region: 'r',
      nodeId: 'n',
      protocol: 'http',
      handler: () => 'ok',
      logger: { info: (line) => lines.push(line), warn: (line) => lines.push(line) },
    })
    defer(async () => {
      await agent.stop()
      await agent.done.catch(() => {})
    })
    return { agent, lines }
  }

  test('a client_ttl beyond what a timer can hold does not become a heartbeat every millisecond', async () => {
    const fake = fakeHeartbeatServer(1e10)
    const { agent, lines } = startHttpAgent(fake.url)
    await agent.ready
    await Bun.sleep(300)
    expect(fake.heartbeats).toHaveLength(1)
    expect(lines).toContain(`[agent] registered as n in r at ${fake.url} (HTTP, heartbeat every 2147483.6 s)`)
  })

  test('a client_ttl of a nanosecond is held to a heartbeat every 0.1 s, not a loop of POSTs', async () => {
    const fake = fakeHeartbeatServer(1e-9)
    const { agent, lines } = startHttpAgent(fake.url)
    await agent.ready
    expect(lines).toContain(`[agent] registered as n in r at ${fake.url} (HTTP, heartbeat every 0.1 s)`)
  })
})

describe('moonlight status against a server of an earlier version', () => {
  test("a /status without the regions' failing count (before the failing state) is shown, not refused as the wrong shape", async () => {
    const earlier = {
      server: 'Online',
      websocket: 'Connected',
      clients: 2,
      tasks: 0,
      regions: { 'us-east-1': { clients: 2, active: 2 } },
      version: '0.1.0',
      uptime_s: 5,
      started_at: '2026-11-24T12:00:00.000Z',
      tasks_total: 7,
      tasks_failed: 0,
      websocket_connections: 1,
      cluster: 'alone',
      instance_id: 'host:8080',
    }
    const url = fakeServer(() => Response.json(earlier))
    const result = await runCli(['status', '--server', url])
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' })
    expect(result.stdout).toContain('us-east-1')
  })
})
