import { type Agent, type AgentOptions, createAgent } from '../../../packages/sdk/src/agent.ts'
import type { TaskHandler } from '../../../packages/sdk/src/handler.ts'
import { certificateFailure, SERVER_CA_HINT } from '../../security/peer-certificate-errors.ts'
import type { CertificatePair } from '../../security/pem-files.ts'
import { listenWithBun } from './bun-listener.ts'

export type { Agent } from '../../../packages/sdk/src/agent.ts'

/** What `moonlight agent` adds to the SDK's agent: TLS both ways and signed calls, through Bun's own APIs. */
export interface CliAgentOptions {
  /** The servers' http(s) base URLs: a cluster's instances, tried in turn. */
  servers: string[]
  token: string
  region: string
  nodeId: string
  weight?: number
  concurrency: number
  /** false (`--no-slots`): the concurrency is not announced as the agent's slots (max_in_flight). */
  announceSlots?: boolean
  handler: TaskHandler
  log: (line: string) => void
  warn: (line: string) => void
  /** A PEM CA bundle an https:// server is verified against (`--ca`); the system's CAs without it. */
  ca?: string
  /** The server's WebSocket path (`--ws-path`). */
  wsPath: string
  /** Set: an HTTP agent serving /work on this port (0 picks one); unset: a WebSocket agent. */
  http?: {
    port: number
    ip?: string
    heartbeatIntervalMs?: number
    /** Serves /work over HTTPS with this certificate and tells the server so (`scheme: "https"`). */
    tls?: CertificatePair
    /** Runs only calls signed with this secret (the server's `signing_secret`); anything else gets 401. */
    signingSecret?: string
  }
}

/** Bun's WebSocket takes fetch's `tls` options (a private CA verifies a wss:// server); lib.dom's constructor type, in force here, has no such argument. */
const BunWebSocket = WebSocket as unknown as new (url: string, options: Bun.WebSocketOptions) => WebSocket

/** The one agent implementation (packages/sdk), with Bun's TLS options and the CLI's log lines. */
export function startCliAgent(options: CliAgentOptions): Agent {
  const { ca, http } = options
  const tls = ca === undefined ? {} : { tls: { ca } }
  const sdkOptions: AgentOptions = {
    servers: options.servers,
    token: options.token,
    region: options.region,
    nodeId: options.nodeId,
    weight: options.weight,
    concurrency: options.concurrency,
    ...(options.announceSlots === false ? { announceSlots: false } : {}),
    handler: options.handler,
    wsPath: options.wsPath,
    logger: { info: options.log, warn: options.warn },
    fetch: (input, init) => fetch(input, { ...init, ...tls }),
    webSocket: (url) => new BunWebSocket(url, tls),
    // Bun's fetch and WebSocket errors carry the TLS failure's code: say which certificate failed and what to do.
    explainError: (error) => {
      const certificate = certificateFailure(error)
      return certificate ? `${certificate}; ${SERVER_CA_HINT}` : undefined
    },
  }
  if (http === undefined) return createAgent(sdkOptions)
  return createAgent({
    ...sdkOptions,
    protocol: 'http',
    port: http.port,
    ip: http.ip,
    heartbeatIntervalMs: http.heartbeatIntervalMs,
    listen: listenWithBun({ tls: http.tls, signingSecret: http.signingSecret, log: options.log, warn: options.warn }),
  })
}
