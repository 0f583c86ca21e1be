/** Shared test helpers: a real server on port 0, real HTTP and WebSocket agents, real sockets. */
import { afterEach } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import type { z } from 'zod'
import { type Config, type configSchema, parseConfig } from '../../src/config/config.ts'
import { type MoonlightServer, startServer } from '../../src/server/server.ts'

export const TOKEN = 'supersecrettokenox0'
export const ROOT = join(import.meta.dir, '..', '..')

/** The keys mls.json.example sets, each as a config file writes it. */
type ConfigInput = z.input<typeof configSchema>
type WsInput = NonNullable<ConfigInput['ws']>
export interface SeedConfig {
  note: string
  tokens: string[]
  retry_count: number
  port: number
  ws: Required<Pick<WsInput, 'enabled' | 'path' | 'max_connections' | 'read_timeout' | 'write_timeout' | 'heartbeat_interval' | 'connection_check_interval'>>
  html: Required<NonNullable<ConfigInput['html']>>
  region_hierarchy: Record<string, string>
}

/** The user's example config, read from mls.json.example at the top of the repo (validated, never copied here). */
export const SEED_CONFIG: SeedConfig = readSeedConfig(join(ROOT, 'mls.json.example'))

function readSeedConfig(path: string): SeedConfig {
  const raw: unknown = JSON.parse(readFileSync(path, 'utf8'))
  // Throws naming the key if the example stops being a valid config.
  parseConfig(raw, path)
  return raw as SeedConfig
}

// NonNullable: an optional section (cluster) is partial too.
type DeepPartial<T> = { [K in keyof T]?: NonNullable<T[K]> extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<NonNullable<T[K]>>) : T[K] }

export interface TestServer {
  server: MoonlightServer
  url: string
  wsUrl: string
  stop: () => Promise<void>
}

/** Starts the real server in this process on a free port, with the seed config plus `overrides`. */
export function startTestServer(overrides: DeepPartial<Config> = {}): TestServer {
  const raw = {
    ...SEED_CONFIG,
    ...overrides,
    ws: { ...SEED_CONFIG.ws, ...overrides.ws },
    html: { ...SEED_CONFIG.html, ...overrides.html },
  }
  const server = startServer({ loaded: parseConfig(raw, 'test'), port: 0, host: '127.0.0.1', log: () => {} })
  return {
    server,
    url: server.url,
    wsUrl: `${server.url.replace(/^http/, 'ws')}${server.settings.config.ws.path}`,
    stop: () => server.stop(0),
  }
}

export interface TaskResult {
  status: number
  headers: Headers
  text: string
  json: () => any
}

/**
 * The value of one sample in a /metrics text: the line `name value`, `name` written with its labels
 * if it has any (`moonlight_http_agent_connections{state="open"}`); throws when there is no such line.
 */
export function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((each) => each.startsWith(`${name} `))
  if (line === undefined) throw new Error(`no ${name} in /metrics`)
  return Number(line.slice(name.length + 1))
}

/** One sample of a server's GET /metrics (as metricValue reads it). */
export async function metricSample(url: string, name: string): Promise<number> {
  return metricValue(await (await fetch(`${url}/metrics`)).text(), name)
}

/** POSTs /task/request the way curl would. */
export async function postTask(url: string, body: unknown, token: string | null = TOKEN): Promise<TaskResult> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== null) headers.authorization = `Bearer ${token}`
  const response = await fetch(`${url}/task/request`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) })
  const text = await response.text()
  return { status: response.status, headers: response.headers, text, json: () => JSON.parse(text) }
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<TaskResult> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  const text = await response.text()
  return { status: response.status, headers: response.headers, text, json: () => JSON.parse(text) }
}

/** A port nothing listens on: a real "connection refused" on this machine. */
export function deadPort(): number {
  const listener = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const { port } = listener
  listener.stop(true)
  return port
}

export interface HttpAgent {
  nodeId: string
  port: number
  /** Payloads this agent received, in order. */
  received: unknown[]
  heartbeat: (extra?: Record<string, unknown>) => Promise<TaskResult>
  stop: () => void
}

/** A real HTTP agent: a Bun server with POST /work, registered by heartbeat. */
export async function startHttpAgent(
  serverUrl: string,
  options: { nodeId: string; region: string; weight?: number; token?: string; work?: (payload: unknown, request: Request) => Response | Promise<Response> },
): Promise<HttpAgent> {
  const received: unknown[] = []
  const work = options.work ?? ((payload) => Response.json({ node: options.nodeId, echo: payload }))
  const agent = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: async (request) => {
      if (new URL(request.url).pathname !== '/work') return new Response('not found', { status: 404 })
      const payload = await request.json()
      received.push(payload)
      return work(payload, request)
    },
  })
  const heartbeat = (extra: Record<string, unknown> = {}) =>
    postJson(`${serverUrl}/client/heartbeat`, {
      ip: '127.0.0.1',
      node_id: options.nodeId,
      token: options.token ?? TOKEN,
      region: options.region,
      port: agent.port,
      ...(options.weight === undefined ? {} : { weight: options.weight }),
      ...extra,
    })
  const first = await heartbeat()
  if (first.status !== 200) throw new Error(`heartbeat failed: ${first.status} ${first.text}`)
  return { nodeId: options.nodeId, port: agent.port ?? 0, received, heartbeat, stop: () => agent.stop(true) }
}

/** An HTTP agent (as startHttpAgent) that holds every task until `release` is called; then it answers `{did: payload}`. */
export async function startHeldHttpAgent(serverUrl: string, options: { nodeId: string; region: string }): Promise<HttpAgent & { release: () => void }> {
  const { promise: released, resolve: release } = Promise.withResolvers<void>()
  const agent = await startHttpAgent(serverUrl, {
    ...options,
    work: async (payload) => {
      await released
      return Response.json({ did: payload })
    },
  })
  return { ...agent, release }
}

export interface WsPeer {
  socket: WebSocket
  /** Every message received, parsed. */
  messages: any[]
  next: (type?: string, timeoutMs?: number) => Promise<any>
  send: (message: unknown) => void
  closed: Promise<{ code: number; reason: string }>
  close: () => void
}

/**
 * A raw WebSocket peer with a queue of parsed messages. `next` waits for the next message (of a
 * type); once the socket has closed, a wait that no message already received can satisfy fails at
 * once, naming the close code and reason, instead of running out its timeout.
 */
export async function openWs(wsUrl: string): Promise<WsPeer> {
  const socket = new WebSocket(wsUrl)
  const messages: any[] = []
  const waiters: Array<{ type?: string; resolve: (message: any) => void; reject: (error: Error) => void }> = []
  let consumed = 0
  let closedWith: { code: number; reason: string } | undefined
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    socket.addEventListener('close', (event) => {
      closedWith = { code: event.code, reason: event.reason }
      resolve(closedWith)
      drain()
    })
  })
  socket.addEventListener('message', (event) => {
    const message = JSON.parse(String(event.data))
    messages.push(message)
    drain()
  })
  function drain() {
    for (let i = 0; i < waiters.length; i++) {
      const waiter = waiters[i]!
      const index = messages.findIndex((message, at) => at >= consumed && (waiter.type === undefined || message.type === waiter.type))
      if (index === -1) continue
      consumed = index + 1
      waiters.splice(i, 1)
      waiter.resolve(messages[index])
      i--
    }
    // Messages arrive before the close: whatever they did not satisfy by now never will be.
    if (closedWith === undefined) return
    for (const waiter of waiters.splice(0)) {
      waiter.reject(
        new Error(`no ${waiter.type ?? 'message'}: the socket closed (code ${closedWith.code}${closedWith.reason ? `, reason "${closedWith.reason}"` : ''})`),
      )
    }
  }
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(), { once: true })
    socket.addEventListener('error', () => reject(new Error(`cannot connect to ${wsUrl}`)), { once: true })
  })
  return {
    socket,
    messages,
    next: (type, timeoutMs = 5000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${type ?? 'message'} within ${timeoutMs} ms`)), timeoutMs)
        waiters.push({
          type,
          resolve: (message) => {
            clearTimeout(timer)
            resolve(message)
          },
          reject: (error) => {
            clearTimeout(timer)
            reject(error)
          },
        })
        drain()
      }),
    send: (message) => socket.send(typeof message === 'string' ? message : JSON.stringify(message)),
    closed,
    close: () => socket.close(),
  }
}

/** A WebSocket upgrade by plain fetch: for reading the server's answer when it refuses one. */
export function upgradeRequest(wsUrl: string): Promise<Response> {
  return fetch(wsUrl.replace(/^ws/, 'http'), {
    headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' },
  })
}

export interface WsAgent extends WsPeer {
  nodeId: string
  received: unknown[]
}

/** A real WebSocket agent: registers, then answers each task with `answer(payload)`. */
export async function startWsAgent(
  wsUrl: string,
  options: {
    nodeId: string
    region: string
    weight?: number
    token?: string
    answer?: (payload: unknown, taskId: string) => { response: unknown; status?: number; headers?: Record<string, string> } | null
    /** More fields for its register (max_in_flight, payload_format). */
    register?: Record<string, unknown>
  },
): Promise<WsAgent> {
  const peer = await openWs(wsUrl)
  const received: unknown[] = []
  const answer = options.answer ?? ((payload) => ({ response: { node: options.nodeId, echo: payload } }))
  peer.socket.addEventListener('message', (event) => {
    const message = JSON.parse(String(event.data))
    if (message.type !== 'task') return
    received.push(message.payload)
    const reply = answer(message.payload, message.task_id)
    if (reply) peer.send({ type: 'task_response', payload: { task_id: message.task_id, ...reply } })
  })
  peer.send({
    type: 'register',
    payload: {
      ip: '127.0.0.1',
      node_id: options.nodeId,
      token: options.token ?? TOKEN,
      region: options.region,
      port: 3000,
      ...(options.weight === undefined ? {} : { weight: options.weight }),
      ...options.register,
    },
  })
  const registered = await peer.next()
  if (registered.type !== 'registered') throw new Error(`register failed: ${JSON.stringify(registered)}`)
  return { ...peer, nodeId: options.nodeId, received }
}

/** Everything the streams print, read as it comes: the returned function gives the text so far. */
export function collectOutput(...streams: ReadableStream<Uint8Array>[]): () => string {
  let output = ''
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    const reader = stream.getReader()
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) output += decoder.decode(chunk.value, { stream: true })
  }
  for (const stream of streams) void pump(stream)
  return () => output
}

/** Polls `condition` until it is true or `timeoutMs` passes (then throws with `what`). */
/** A port nothing listens on now: the kernel's pick for a listener that is closed at once. */
export function freePort(): number {
  const probe = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const { port } = probe
  probe.stop(true)
  return port
}

export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await Bun.sleep(10)
  }
}

/** The CLI from the sources; binary tests pass their own `command` instead. */
export const SOURCE_CLI = [process.execPath, join(ROOT, 'src/cli.ts')]

let stateHome: string | undefined
/** One XDG_STATE_HOME for the test process's servers, removed when it exits: a server with no token keeps one there, never in the real home. */
function testStateHome(): string {
  if (stateHome === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'mls-state-'))
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
    stateHome = dir
  }
  return stateHome
}

/** Environment with none of the caller's own Moonlight settings leaking in, and the user's state directory out of reach. */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  return {
    ...process.env,
    MLS_SERVER: '',
    MLS_TOKEN: '',
    MLS_CONFIG: '',
    MLS_TOKENS: '',
    MLS_REDIS_URL: '',
    XDG_STATE_HOME: testStateHome(),
    ...extra,
  }
}

export interface CliOptions {
  command?: string[]
  env?: Record<string, string>
  cwd?: string
  /** Text piped to stdin; without it stdin is empty (not a terminal). */
  stdin?: string
}

export interface CliProcess {
  process: Subprocess<'ignore', 'pipe', 'pipe'>
  /** Everything printed so far (stdout and stderr). */
  output: () => string
  waitForOutput: (text: string | RegExp, timeoutMs?: number) => Promise<void>
  /** How many times `text` appears in the output so far. */
  count: (text: string) => number
  exited: Promise<number>
  kill: (signal?: NodeJS.Signals) => void
}

/** Starts a long-running `moonlight ...args` (a server, an agent) and collects its stdout and stderr. */
export function startCli(args: string[], options: CliOptions = {}): CliProcess {
  const child = Bun.spawn([...(options.command ?? SOURCE_CLI), ...args], {
    cwd: options.cwd ?? ROOT,
    env: cleanEnv(options.env),
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const output = collectOutput(child.stdout, child.stderr)
  const matches = (text: string | RegExp) => (typeof text === 'string' ? output().includes(text) : text.test(output()))
  return {
    process: child,
    output,
    waitForOutput: async (text, timeoutMs = 10_000) => {
      // A process ended by a signal has no exit code, only a signal code.
      await waitFor(() => matches(text) || child.exitCode !== null || child.signalCode !== null, `output ${text}`, timeoutMs)
      if (!matches(text)) throw new Error(`exited (${child.exitCode ?? child.signalCode}) before printing ${text}:\n${output()}`)
    },
    count: (text) => output().split(text).length - 1,
    exited: child.exited,
    kill: (signal = 'SIGTERM') => child.kill(signal),
  }
}

export interface SpawnedServer extends CliProcess {
  /** The URL it printed, or "" if start-up failed (the caller inspects output() and exited). */
  url: string
}

/** Runs `moonlight serve ...args` as its own process (for signals and start-up behaviour). */
export async function spawnServer(args: string[], options: CliOptions = {}): Promise<SpawnedServer> {
  const child = startCli(['serve', ...args], options)
  const listening = /listening on (https?:\/\/\S+)/
  try {
    await child.waitForOutput(listening)
  } catch {
    // Start-up failed (e.g. a bad config): nothing to wait for.
  }
  return { ...child, url: listening.exec(child.output())?.[1] ?? '' }
}

/**
 * Per-test clean-up for a test file: `defer` registers what to undo, `server` starts a test server
 * that is stopped after the test, newest first.
 */
/**
 * For tests of spawned `moonlight serve` processes: after each test, what it deferred is undone (last
 * first), its temporary directories are removed and its servers are killed.
 */
export function processScope(prefix: string) {
  const spawned: SpawnedServer[] = []
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
    for (const child of spawned.splice(0)) {
      child.process.kill('SIGKILL')
      await child.exited
    }
  })
  const tempDir = (): string => {
    const dir = mkdtempSync(join(tmpdir(), prefix))
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
    return dir
  }
  return { spawned, cleanups, tempDir }
}

export function testScope() {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })
  return {
    defer: (cleanup: () => unknown) => void cleanups.push(cleanup),
    server: (overrides: Parameters<typeof startTestServer>[0] = {}): TestServer => {
      const mls = startTestServer(overrides)
      cleanups.push(() => mls.stop())
      return mls
    },
  }
}
