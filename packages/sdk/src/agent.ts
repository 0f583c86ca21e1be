import { HttpAgent } from './_http-agent.ts'
import { WsAgent } from './_ws-agent.ts'
import type { TaskHandler } from './handler.ts'

/** The part of `fetch` the SDK uses: any fetch-compatible function will do. */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>

/** Where an agent's lines go: `info` for what it did, `warn` for what went wrong. */
export interface AgentLogger {
  info(line: string): void
  warn(line: string): void
}

/** A WebSocket as the agent uses it: the WHATWG interface that Bun, Deno, Node 22+ and the `ws` package share. */
export interface WebSocketLike {
  readonly readyState: number
  send(data: string): void
  close(code?: number, reason?: string): void
  // Each implementation types its events its own way (Bun's, undici's, ws's); the agent reads only data, code, reason, message and error.
  // biome-ignore lint/suspicious/noExplicitAny: an `any` event is what lets all of them satisfy this one interface.
  addEventListener(type: 'open' | 'message' | 'error' | 'close', listener: (event: any) => void): void
}

/** One call to `/work`, its body already read (null: it could not be read). */
export interface WorkRequest {
  method: string
  path: string
  headers: Headers
  body: Uint8Array | null
  /** Aborts when the server cuts the call: the task was cancelled or its deadline passed. */
  signal: AbortSignal
}

/** The answer to a call to `/work`. */
export interface WorkReply {
  status: number
  headers: Headers
  body: string
}

/** A server for `/work` that an HTTP agent runs; `listen` starts one. */
export interface WorkListener {
  port: number
  /** `https` tells the server to call `/work` over TLS. */
  scheme?: 'http' | 'https'
  close(): Promise<void>
}

export type Listen = (port: number, handleWork: (request: WorkRequest) => Promise<WorkReply>) => Promise<WorkListener>

export interface AgentOptions<Payload = unknown> {
  /** The server's http(s) base URL, or several (a cluster's instances): the agent moves to the next when one fails. */
  servers: string | string[]
  token: string
  region: string
  /** A name unique in the fleet; give a stable one so the dashboard knows the agent across restarts. */
  nodeId: string
  /** Its share of tasks, 0-1000 (the server's default 1; 0 = none). */
  weight?: number
  /** Tasks run at once; more wait their turn. Default 16. */
  concurrency?: number
  /**
   * Announce `concurrency` to the server as the agent's slots (`max_in_flight`), so the server never
   * sends more at once and queues the rest where another agent can take them. Default true; false,
   * the server sends what it likes and the agent queues locally (before Moonlight 24's slots).
   */
  announceSlots?: boolean
  handler: TaskHandler<Payload>
  /** `ws` (default): one WebSocket to the server. `http`: serve `POST /work` and register by heartbeat. */
  protocol?: 'ws' | 'http'
  /** The server's WebSocket path (`ws.path`). Default `/ws`. */
  wsPath?: string
  /** (http) The port `/work` listens on; 0 (the default) picks a free one. */
  port?: number
  /** (http) The address the server should call, if not the one it sees. */
  ip?: string
  /** (http) Milliseconds between heartbeats; by default a third of the server's `client_ttl`. */
  heartbeatIntervalMs?: number
  /** Default: warnings to `console.warn`, nothing else. */
  logger?: AgentLogger
  /** The fetch heartbeats use (to add TLS options, say). Default: the global one. */
  fetch?: FetchLike
  /** Opens a WebSocket. Default: the global `WebSocket`, else the `ws` package if it is installed. */
  webSocket?: (url: string) => WebSocketLike | Promise<WebSocketLike>
  /** (http) Starts the `/work` server. Default: `node:http` on `port`. */
  listen?: Listen
  /** One line on a connection failure (a certificate refused, say), or undefined to use its message. */
  explainError?: (error: unknown) => string | undefined
}

/** A running agent. */
export interface Agent {
  /** Resolves when the agent first registers; rejects with AgentFatalError if the server refuses it. */
  readonly ready: Promise<void>
  /** Resolves after `stop()` once every held task is answered; rejects with AgentFatalError. */
  readonly done: Promise<void>
  /** Drains: weight 0 (no new tasks), waits for the tasks in hand, then disconnects. */
  stop(): Promise<void>
  /** Tasks accepted and not yet answered. */
  readonly held: number
  /** (http) The port `/work` listens on, once it does. */
  readonly port: number | undefined
}

/** The server refused this agent (bad token, bad registration): retrying would not help. */
export class AgentFatalError extends Error {
  override name = 'AgentFatalError'
}

export const DEFAULT_CONCURRENCY = 16

/** What the two transports share, with every default filled in. */
export interface AgentSettings {
  servers: string[]
  token: string
  region: string
  nodeId: string
  weight: number | undefined
  concurrency: number
  /** What the agent announces as its slots (`max_in_flight`); undefined: none. */
  maxInFlight: number | undefined
  handler: TaskHandler
  logger: AgentLogger
  fetch: FetchLike
  explainError: (error: unknown) => string | undefined
  /** Called once, on the first registration. */
  onRegistered: () => void
}

/**
 * Starts an agent: it connects, registers, heartbeats and answers tasks with `handler` until `stop()`.
 * @example
 * const agent = createAgent({ servers: 'http://localhost:8080', token, region: 'eu-west-1', nodeId: 'eu-1',
 *   handler: async (payload: { n: number }) => ({ doubled: payload.n * 2 }) })
 * process.on('SIGTERM', () => agent.stop())
 */
export function createAgent<Payload = unknown>(options: AgentOptions<Payload>): Agent {
  const servers = (Array.isArray(options.servers) ? options.servers : [options.servers]).map((server) => server.replace(/\/+$/, ''))
  if (servers.length === 0) throw new TypeError('createAgent: pass at least one server URL')
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new TypeError('createAgent: concurrency must be an integer of at least 1')
  let registered: () => void = () => {}
  const ready = new Promise<void>((resolve) => (registered = resolve))
  const settings: AgentSettings = {
    servers,
    token: options.token,
    region: options.region,
    nodeId: options.nodeId,
    weight: options.weight,
    concurrency,
    maxInFlight: options.announceSlots === false ? undefined : concurrency,
    handler: options.handler as TaskHandler,
    logger: options.logger ?? { info: () => {}, warn: (line) => console.warn(line) },
    fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
    explainError: options.explainError ?? (() => undefined),
    onRegistered: () => registered(),
  }
  const transport =
    options.protocol === 'http'
      ? new HttpAgent(settings, { port: options.port ?? 0, ip: options.ip, heartbeatIntervalMs: options.heartbeatIntervalMs, listen: options.listen })
      : new WsAgent(settings, { wsPath: options.wsPath ?? '/ws', webSocket: options.webSocket })
  const done = transport.run()
  // Whoever awaits `done` or `ready` sees a refusal; nobody awaiting one is no unhandled rejection.
  done.catch(() => {})
  const readyOrRefused = Promise.race([ready, done])
  readyOrRefused.catch(() => {})
  return {
    ready: readyOrRefused,
    done,
    stop: () => transport.stop(),
    get held() {
      return transport.held
    },
    get port() {
      return transport.port
    },
  }
}
