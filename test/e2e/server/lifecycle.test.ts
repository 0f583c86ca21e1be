import { describe, expect, test } from 'bun:test'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { HttpClientPool } from '../../../src/transports/http-client/pool.ts'
import {
  postTask,
  processScope,
  ROOT,
  SEED_CONFIG,
  type SpawnedServer,
  spawnServer,
  startCli,
  startHttpAgent,
  startWsAgent,
  TOKEN,
  waitFor,
} from '../../support/helpers.ts'

const { spawned, cleanups, tempDir } = processScope('mls-life-')

function writeConfig(dir: string, config: unknown, name = 'mls.json'): string {
  const path = join(dir, name)
  writeFileSync(path, typeof config === 'string' ? config : JSON.stringify(config, null, 2))
  return path
}

async function spawn(args: string[], options: Parameters<typeof spawnServer>[1] = {}): Promise<SpawnedServer> {
  const child = await spawnServer(args, options)
  spawned.push(child)
  return child
}

interface RawResponse {
  /** 0 if the connection closed before a status line arrived. */
  status: number
  headers: Map<string, string>
  body: string
  /** False if the connection closed before the whole response (by its Content-Length) arrived. */
  complete: boolean
}

interface KeptAliveConnection {
  /** Writes one HTTP/1.1 request and resolves with its response, or with what arrived before the connection closed. */
  request: (head: string, body?: string) => Promise<RawResponse>
  /** Resolves when the server has closed the connection. */
  closed: Promise<void>
  close: () => void
}

/** One raw HTTP/1.1 connection: unlike fetch's pool, the test decides exactly which request reuses it. */
async function keptAliveConnection(url: string): Promise<KeptAliveConnection> {
  const { hostname, port } = new URL(url)
  let received = ''
  let onChange = () => {}
  let isClosed = false
  let markClosed!: () => void
  const closed = new Promise<void>((resolve) => (markClosed = resolve))
  const socket = await Bun.connect({
    hostname,
    port: Number(port),
    socket: {
      data: (_socket, chunk) => {
        received += chunk.toString('latin1')
        onChange()
      },
      close: () => {
        isClosed = true
        markClosed()
        onChange()
      },
      error: () => {},
    },
  })
  const parse = (): RawResponse | undefined => {
    const headEnd = received.indexOf('\r\n\r\n')
    if (headEnd === -1)
      return isClosed ? { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0), headers: new Map(), body: '', complete: false } : undefined
    const [statusLine = '', ...lines] = received.slice(0, headEnd).split('\r\n')
    const headers = new Map(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]))
    const length = Number(headers.get('content-length') ?? Number.NaN)
    const body = received.slice(headEnd + 4)
    const complete = body.length >= length
    if (!complete && !isClosed) return undefined
    received = complete ? body.slice(length) : ''
    return { status: Number(statusLine.split(' ')[1]), headers, body: complete ? body.slice(0, length) : body, complete }
  }
  return {
    request: (head, body = '') =>
      new Promise((resolve) => {
        onChange = () => {
          const response = parse()
          if (response) resolve(response)
        }
        if (isClosed) return onChange()
        socket.write(`${head}\r\n${body ? `content-length: ${Buffer.byteLength(body)}\r\n` : ''}\r\n${body}`)
      }),
    closed,
    close: () => socket.end(),
  }
}

describe('start-up', () => {
  test('with no config file at all it runs on the embedded default and prints a generated token once', async () => {
    const empty = tempDir()
    const child = await spawn(['--port', '0', '--host', '127.0.0.1'], { cwd: empty, env: { HOME: empty } })
    expect(child.url).toStartWith('http://127.0.0.1:')
    const output = child.output()
    expect(output).toContain('config: embedded default')
    const token = /\b(mls_[\w-]+)/.exec(output)?.[1]
    expect(token).toBeTruthy()
    expect(output.split(token!).length - 1).toBe(1)
    // Never open: the generated token is required.
    expect((await fetch(`${child.url}/clients`)).status).toBe(401)
    expect((await fetch(`${child.url}/clients`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200)
    const status = await (await fetch(`${child.url}/status`)).json()
    expect(status).toMatchObject({ server: 'Online', websocket: 'Connected' })
    // The seed hierarchy is in the default.
    const tree = await (await fetch(`${child.url}/regions`)).json()
    expect(tree.children.map((child: { region: string }) => child.region)).toEqual(['asia', 'emea', 'northamerica'])
  })

  test("the seed's example config loads verbatim from --config, and the source is printed", async () => {
    const dir = tempDir()
    const path = writeConfig(dir, SEED_CONFIG)
    const child = await spawn(['--config', path, '--port', '0', '--host', '127.0.0.1'])
    expect(child.output()).toContain(`config: ${path}`)
    expect(child.output()).not.toContain('warning')
    expect((await fetch(`${child.url}/clients`, { headers: { authorization: 'Bearer supersecrettokenox1' } })).status).toBe(200)
  })

  test('./mls.json in the working directory is found; unknown keys are warned about', async () => {
    const dir = tempDir()
    writeConfig(dir, { ...SEED_CONFIG, colour: 'blue' })
    const child = await spawn(['--port', '0', '--host', '127.0.0.1'], { cwd: dir, env: { HOME: dir } })
    expect(child.output()).toContain(`config: ${join(dir, 'mls.json')}`)
    expect(child.output()).toContain('unknown config key "colour"')
  })

  test('a bad config stops start-up with a message naming the key and the problem', async () => {
    const dir = tempDir()
    const path = writeConfig(dir, { ...SEED_CONFIG, retry_count: -1, ws: { ...SEED_CONFIG.ws, path: 'ws' } })
    const child = await spawn(['--config', path, '--port', '0'])
    expect(await child.exited).toBe(1)
    expect(child.output()).toContain('retry_count')
    expect(child.output()).toContain('ws.path: must start with "/"')
    expect(child.output()).not.toContain('    at ')
  })

  test('--config /dev/zero stops start-up saying the file is too large, instead of reading it forever', async () => {
    const child = await spawn(['--config', '/dev/zero', '--port', '0', '--host', '127.0.0.1'])
    expect(await child.exited).toBe(1)
    expect(child.output()).toBe('moonlight serve: config /dev/zero is too large (more than 16 MiB)\n')
  })
})

describe('SIGHUP reload', () => {
  test('new tokens and settings apply without dropping clients; an invalid file is rejected and the old one stays', async () => {
    const dir = tempDir()
    // The callers' token is rotated; the agent's stays (a reload ends the agents of a revoked token: hostile-auth-and-cluster.test.ts).
    const path = writeConfig(dir, { ...SEED_CONFIG, tokens: ['first-token-aaaa', 'agent-token-cccc'] })
    const child = await spawn(['--config', path, '--port', '0', '--host', '127.0.0.1'])
    const wsUrl = `${child.url.replace('http', 'ws')}/ws`
    const agent = await startWsAgent(wsUrl, { nodeId: 'stays', region: 'us-east-1', token: 'agent-token-cccc' })
    cleanups.push(agent.close)
    expect((await postTask(child.url, { region: 'usa', payload: 1 }, 'first-token-aaaa')).status).toBe(200)

    // New tokens and a new hierarchy: us-east-1 now sits under "atlantic".
    // ws.enabled only applies at the next start: the running sockets keep their pings and /status says so.
    writeConfig(dir, {
      ...SEED_CONFIG,
      tokens: ['second-token-bbbb', 'agent-token-cccc'],
      region_hierarchy: { 'us-east-1': 'atlantic' },
      ws: { ...SEED_CONFIG.ws, enabled: false },
    })
    child.process.kill('SIGHUP')
    await child.waitForOutput('config reloaded')
    expect(child.output()).toContain('take effect at the next start')
    expect((await (await fetch(`${child.url}/status`)).json()).websocket).toBe('Connected')
    expect((await postTask(child.url, { region: 'usa', payload: 2 }, 'first-token-aaaa')).status).toBe(401)
    const routed = await postTask(child.url, { region: 'atlantic', payload: 3 }, 'second-token-bbbb')
    expect(routed.status).toBe(200)
    expect(routed.headers.get('x-moonlight-node')).toBe('stays')
    expect(agent.received).toEqual([1, 3])

    writeConfig(dir, '{ "tokens": 5 }')
    child.process.kill('SIGHUP')
    await child.waitForOutput('reload rejected')
    expect(child.output()).toMatch(/tokens: /)
    expect((await postTask(child.url, { region: 'atlantic', payload: 4 }, 'second-token-bbbb')).status).toBe(200)
  })
  test('a SIGHUP or SIGTERM sent the moment the server says it is listening is handled, not fatal', async () => {
    // A supervisor (systemd's ExecReload, a deploy script) may signal as soon as the server is up. The
    // preload pauses the server right after it prints "listening on"; a signal sent then must find
    // the handlers installed, not SIGHUP's default action, which ends the process.
    const dir = tempDir()
    const path = writeConfig(dir, SEED_CONFIG)
    const command = [process.execPath, '--preload', join(ROOT, 'test/fixtures/pause-after-listening.ts'), join(ROOT, 'src/cli.ts')]
    const reloaded = await spawn(['--config', path, '--port', '0', '--host', '127.0.0.1'], { command })
    reloaded.process.kill('SIGHUP')
    await reloaded.waitForOutput('config reloaded')
    expect(reloaded.process.signalCode).toBeNull()
    expect(reloaded.process.exitCode).toBeNull()
    expect((await fetch(`${reloaded.url}/healthz`)).status).toBe(200)

    const stopped = await spawn(['--config', path, '--port', '0', '--host', '127.0.0.1'], { command })
    stopped.process.kill('SIGTERM')
    expect(await stopped.exited).toBe(0)
    expect(stopped.output()).toContain('[mls] stopped')
  })
})

/**
 * A server on the seed config with one HTTP agent in `asia` whose task holds until `release()`;
 * `taskStarted` settles once a task reached it.
 */
async function serverWithHeldAgent() {
  const path = writeConfig(tempDir(), SEED_CONFIG)
  const child = await spawn(['--config', path, '--port', '0', '--host', '127.0.0.1'])
  const { promise: released, resolve: release } = Promise.withResolvers<void>()
  const { promise: taskStarted, resolve: started } = Promise.withResolvers<void>()
  const slow = await startHttpAgent(child.url, {
    nodeId: 'slow',
    region: 'asia',
    work: async () => {
      started()
      await released
      return Response.json({ finished: true })
    },
  })
  cleanups.push(slow.stop)
  return { child, release, taskStarted }
}

describe('graceful stop', () => {
  test('SIGTERM lets the in-flight task finish, closes WebSockets with 1001, refuses new work and exits 0', async () => {
    const { child, release, taskStarted } = await serverWithHeldAgent()
    const watcher = await startWsAgent(`${child.url.replace('http', 'ws')}/ws`, { nodeId: 'watcher', region: 'emea' })

    const inFlight = postTask(child.url, { region: 'asia', payload: 'long job' })
    await taskStarted
    child.process.kill('SIGTERM')
    await child.waitForOutput('finishing in-flight tasks')
    // New work is refused while the old task is still running: the listener stays open (Bun cannot close
    // it without also closing idle keep-alive connections), so a new connection gets 503, not a refusal.
    const refused = await fetch(`${child.url}/healthz`)
    expect([refused.status, (await refused.json()).code, refused.headers.get('connection')]).toEqual([503, 'shutting_down', 'close'])
    release()
    const result = await inFlight
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ finished: true })
    expect((await watcher.closed).code).toBe(1001)
    expect(await child.exited).toBe(0)
  })

  test('a request on a kept-alive connection during the grace period gets a whole 503 shutting_down, never a reset', async () => {
    const { child, release, taskStarted } = await serverWithHeldAgent()
    // Each connection has answered one request and sits idle, kept alive, when the stop begins.
    const connections = await Promise.all(Array.from({ length: 64 }, () => keptAliveConnection(child.url)))
    for (const connection of connections) cleanups.push(connection.close)
    const host = `Host: ${new URL(child.url).host}`
    for (const response of await Promise.all(connections.map((connection) => connection.request(`GET /healthz HTTP/1.1\r\n${host}`)))) {
      expect(response.status).toBe(200)
    }
    const statusConnection = await keptAliveConnection(child.url)
    cleanups.push(statusConnection.close)
    expect((await statusConnection.request(`GET /status HTTP/1.1\r\n${host}`)).status).toBe(200)

    const inFlight = postTask(child.url, { region: 'asia', payload: 'long job' })
    await taskStarted
    child.process.kill('SIGTERM')
    await child.waitForOutput('finishing in-flight tasks')
    // Tasks on most connections, a health check on every fourth: every route refuses new work alike.
    const task = JSON.stringify({ region: 'asia', payload: 'too late' })
    const answers = await Promise.all(
      connections.map((connection, i) =>
        i % 4 === 3
          ? connection.request(`GET /healthz HTTP/1.1\r\n${host}`)
          : connection.request(`POST /task/request HTTP/1.1\r\n${host}\r\nauthorization: Bearer ${TOKEN}\r\ncontent-type: application/json`, task),
      ),
    )
    const outcomes = answers.map(
      (answer) =>
        `${answer.status} ${answer.complete ? 'complete' : 'cut'} ${answer.complete ? JSON.parse(answer.body).code : ''} ${answer.headers.get('connection')}`,
    )
    expect(outcomes).toEqual(connections.map(() => '503 complete shutting_down close'))
    expect(JSON.parse(answers[0]!.body)).toEqual({ error: 'the server is shutting down', code: 'shutting_down' })
    // Connection: close is kept: the server closes each connection after its answer, so no client reuses it.
    await Promise.all(connections.map((connection) => connection.closed))
    // /status still answers, and says so.
    const status = await statusConnection.request(`GET /status HTTP/1.1\r\n${host}`)
    expect([status.status, JSON.parse(status.body).server, status.headers.get('connection')]).toEqual([200, 'Stopping', 'close'])

    release()
    const result = await inFlight
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ finished: true })
    expect(await child.exited).toBe(0)
  })
})

describe('long tasks over HTTP', () => {
  test("Bun's fetch idle limit does not cut an agent still working within task_timeout", async () => {
    const dir = tempDir()
    const config = writeConfig(dir, { ...SEED_CONFIG, task_timeout: 30 })
    // Bun's idle limit (5 minutes by default) set to 1 s, which it enforces within about 8 s.
    const server = await spawn(['--config', config, '--port', '0', '--host', '127.0.0.1'], { env: { BUN_CONFIG_HTTP_IDLE_TIMEOUT: '1' } })
    const slow = await startHttpAgent(server.url, {
      nodeId: 'slow',
      region: 'usa',
      weight: 5,
      work: () => Bun.sleep(9500).then(() => Response.json({ done: true })),
    })
    const spare = await startHttpAgent(server.url, { nodeId: 'spare', region: 'usa', weight: 1 })
    cleanups.push(slow.stop, spare.stop)
    // The same wait from `moonlight task`, itself a Bun process with the same 1 s idle limit.
    const cli = startCli(['task', '--server', server.url, '--token', TOKEN, '--region', 'usa', '--payload', '"cli job"'], {
      env: { BUN_CONFIG_HTTP_IDLE_TIMEOUT: '1' },
    })
    const result = await postTask(server.url, { region: 'usa', payload: 'long job' })
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ done: true })
    expect(await cli.exited).toBe(0)
    expect(cli.output()).toContain('{"done":true}')
    // Cut off, the task would have been retried here while the first agent was still running it.
    expect(spare.received).toEqual([])
    expect(slow.received).toEqual(expect.arrayContaining(['long job', 'cli job']))
  }, 30_000)

  test("300 tasks waiting on a slow agent do not hold up another agent's task, with BUN_CONFIG_MAX_HTTP_REQUESTS unset; /metrics shows the pools", async () => {
    const dir = tempDir()
    const config = writeConfig(dir, { ...SEED_CONFIG, task_timeout: 60 })
    const server = await spawn(['--config', config, '--port', '0', '--host', '127.0.0.1'], { env: { BUN_CONFIG_MAX_HTTP_REQUESTS: '' } })
    expect(server.output()).not.toContain('BUN_CONFIG_MAX_HTTP_REQUESTS')
    // The slow agent answers nothing until the fast task is done: that task cannot have waited behind it.
    let release!: () => void
    const released = new Promise<void>((resolve) => {
      release = resolve
    })
    const slow = await startHttpAgent(server.url, { nodeId: 'slow', region: 'usa', work: () => released.then(() => Response.json({ slow: true })) })
    const fast = await startHttpAgent(server.url, { nodeId: 'fast', region: 'europe', work: () => Response.json({ fast: true }) })
    cleanups.push(slow.stop, fast.stop)
    // This test's own fetch would queue its 300 calls past 256: they go through the server's own pool instead.
    const callers = new HttpClientPool({ maxConnections: 400, idleTimeoutMs: 30_000 })
    cleanups.push(() => callers.close())
    const { port } = new URL(server.url)
    const body = JSON.stringify({ region: 'usa', payload: 'slow' })
    const request = Buffer.from(
      `POST /task/request HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nauthorization: Bearer ${TOKEN}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    )
    const statuses: number[] = []
    const slowTasks = Array.from({ length: 300 }, () => {
      let status = 0
      return callers
        .request({ scheme: 'http', host: '127.0.0.1', port: Number(port) }, request, {
          head: (head) => {
            status = head.status
            return 1 << 20
          },
          body: () => {},
          end: () => {},
        })
        .done.then(() => statuses.push(status))
    })
    await waitFor(async () => /moonlight_http_agent_calls_queued 236/.test(await (await fetch(`${server.url}/metrics`)).text()), '300 tasks at the slow agent')
    const metrics = await (await fetch(`${server.url}/metrics`)).text()
    // 64 connections (http_agents.max_connections), every one busy, the rest queued at that agent alone.
    expect(metrics).toContain('moonlight_http_agent_connections{state="open"} 64')
    expect(metrics).toContain('moonlight_http_agent_connections{state="busy"} 64')
    expect(metrics).toContain('moonlight_http_agent_calls_queued_max 236')
    expect(metrics).not.toContain('moonlight_http_agent_call_limit')
    const result = await postTask(server.url, { region: 'europe', payload: 'fast' })
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ fast: true })
    release()
    await Promise.all(slowTasks)
    expect(statuses).toEqual(Array.from({ length: 300 }, () => 200))
  }, 60_000)
})
