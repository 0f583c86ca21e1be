import { certificateFailure, SERVER_CA_HINT } from '../tls-failures.ts'
import { summarizeIssues } from '../wire/issues.ts'
import { type WsAgentInbound, wsAgentInboundSchema } from '../wire/ws.ts'
import { type Agent, AgentFatalError, type AgentOptions, Pause } from './agent.ts'
import { Backoff } from './backoff.ts'
import { answerTask, describeFailure } from './handler.ts'
import { Limiter } from './limiter.ts'

export interface WsAgentOptions extends AgentOptions {
  /** One URL per server (a cluster's instances): the agent moves to the next when a connection fails. */
  wsUrls: string[]
}

interface SessionEnd {
  registered: boolean
  reason: string
  /** Set when the server refused us: the agent stops instead of reconnecting. */
  fatal?: string
}

type TaskMessage = Extract<WsAgentInbound, { type: 'task' }>

/** Refusals that say "not now" rather than "never": the agent reconnects with back-off instead of giving up. */
const PASSING_REFUSALS = new Set(['register_timeout', 'too_many_clients', 'node_id_in_use'])
/** A server this many heartbeat intervals silent is presumed gone (a dead link sends no close). */
const SILENT_INTERVALS = 3
/** Close codes after which reconnecting would only repeat the refusal. */
const FATAL_CLOSE_CODES = new Map([[1008, 'the server refused the token']])

/** Bun's WebSocket takes fetch's `tls` options (a private CA verifies a wss:// server); lib.dom's constructor type, in force here, has no such argument. */
const BunWebSocket = WebSocket as unknown as new (url: string, options: Bun.WebSocketOptions) => WebSocket

/**
 * A WebSocket agent: registers, heartbeats, answers `task` messages with the handler (at most
 * `concurrency` at once), and reconnects with backoff, registering again, when the server goes away.
 */
export class WsAgent implements Agent {
  private readonly limiter: Limiter
  /** Tasks being handled, by id: a cancel from the server aborts the one it names. */
  private readonly running = new Map<string, AbortController>()
  private readonly backoff = new Backoff()
  private readonly pause = new Pause()
  private socket: WebSocket | undefined
  private stopping = false

  /** The server being tried, as an index into wsUrls. */
  private current = 0

  constructor(private readonly options: WsAgentOptions) {
    this.limiter = new Limiter(options.concurrency)
  }

  private get wsUrl(): string {
    return this.options.wsUrls[this.current % this.options.wsUrls.length]!
  }

  get held(): number {
    return this.limiter.held
  }

  async run(): Promise<void> {
    while (!this.stopping) {
      const end = await this.session()
      if (end.fatal) throw new AgentFatalError(end.fatal)
      if (this.stopping) break
      if (end.registered) this.backoff.reset()
      // With several servers, the next one: an instance that died should not hold the agent back.
      this.current++
      const delayMs = this.options.wsUrls.length > 1 && end.registered ? 0 : this.backoff.next()
      const next = this.options.wsUrls.length > 1 ? ` (next: ${this.wsUrl})` : ''
      this.options.warn(`[agent] ${end.registered ? 'disconnected' : 'cannot connect'}: ${end.reason}; reconnecting in ${(delayMs / 1000).toFixed(1)} s${next}`)
      await this.pause.sleep(delayMs)
    }
    // The connection may have dropped during a stop: tasks still running have nowhere to answer, but we let them end.
    await this.limiter.idle()
  }

  async stop(): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    this.pause.wake()
    // Weight 0 tells the server to send no new tasks while the held ones finish.
    this.send(this.socket, { type: 'heartbeat', payload: { weight: 0 } })
    await this.limiter.idle()
    this.socket?.close(1000, 'agent stopping')
  }

  /** One connection, from connect to close. */
  private session(): Promise<SessionEnd> {
    const { options } = this
    return new Promise((resolve) => {
      const socket = new BunWebSocket(this.wsUrl, options.ca === undefined ? {} : { tls: { ca: options.ca } })
      this.socket = socket
      let registered = false
      let fatal: string | undefined
      let passing = false
      let lastError: string | undefined
      let lastHeardMs = Date.now()
      let heartbeat: ReturnType<typeof setInterval> | undefined
      let ended = false
      const end = (reason: string) => {
        if (ended) return
        ended = true
        clearInterval(heartbeat)
        if (this.socket === socket) this.socket = undefined
        resolve({ registered, reason, fatal })
      }

      socket.addEventListener('open', () => {
        const { nodeId, token, region, weight } = options
        this.send(socket, { type: 'register', payload: { node_id: nodeId, token, region, ...(weight === undefined ? {} : { weight }) } })
      })
      socket.addEventListener('message', (event) => {
        lastHeardMs = Date.now()
        const message = this.parse(event.data)
        if (!message) return
        switch (message.type) {
          case 'registered': {
            registered = true
            const { node_id, region, weight, heartbeat_interval } = message.payload
            options.log(`[agent] registered as ${node_id} in ${region} (weight ${weight}) at ${this.wsUrl}`)
            if (this.stopping) this.send(socket, { type: 'heartbeat', payload: { weight: 0 } })
            const intervalMs = heartbeat_interval * 1000
            heartbeat = setInterval(() => {
              if (Date.now() - lastHeardMs > SILENT_INTERVALS * intervalMs) {
                socket.close(4002, 'server silent')
                end(`no word from the server for ${SILENT_INTERVALS * heartbeat_interval} s`)
                return
              }
              this.send(socket, { type: 'heartbeat' })
            }, intervalMs)
            return
          }
          case 'heartbeat_ack':
            return
          case 'task':
            return this.onTask(socket, message)
          case 'cancel':
            return this.onCancel(message.task_id)
          case 'error':
            // Before registration the only message we sent is `register`: an error means it was refused.
            if (registered) options.warn(`[agent] the server reported: ${message.payload.message}`)
            else if (PASSING_REFUSALS.has(message.payload.code ?? '')) {
              passing = true
              options.warn(`[agent] not registered yet: ${message.payload.message} (${message.payload.code})`)
            } else {
              fatal = `registration refused: ${message.payload.message}`
              socket.close(1000, 'registration refused')
            }
            return
        }
      })
      socket.addEventListener('error', (event) => {
        const { message, error } = event as ErrorEvent
        // Bun's error event carries the TLS failure's code on its `error`.
        const certificate = certificateFailure(error ?? message)
        lastError = certificate ? `${certificate}; ${SERVER_CA_HINT}` : message || 'connection error'
      })
      socket.addEventListener('close', (event) => {
        const refusal = FATAL_CLOSE_CODES.get(event.code)
        if (refusal && !this.stopping && !passing) fatal ??= refusal
        end(event.code === 1006 ? (lastError ?? 'connection lost') : `closed with code ${event.code}${event.reason ? ` (${event.reason})` : ''}`)
      })
    })
  }

  private onTask(socket: WebSocket, message: TaskMessage): void {
    const { task_id: taskId } = message
    if (this.stopping) {
      // Sent before the server saw our weight 0: a 503 makes it retry on another agent.
      this.send(socket, { type: 'task_response', payload: { task_id: taskId, status: 503, response: { error: 'the agent is shutting down' } } })
      return
    }
    const cancel = new AbortController()
    this.running.set(taskId, cancel)
    // Sending the answer is part of the job, so a graceful stop waits until it has left.
    void this.limiter.run(async () => {
      let answer: Awaited<ReturnType<typeof answerTask>>
      try {
        answer = await answerTask(this.options.handler, message.payload, taskId, cancel.signal)
      } finally {
        this.running.delete(taskId)
      }
      // The server has let the task go: an answer would be dropped.
      if (cancel.signal.aborted) return
      if (answer.status >= 500) this.options.warn(`[agent] task ${taskId} failed (${answer.status}): ${describeFailure(answer)}`)
      if (socket.readyState !== WebSocket.OPEN) {
        this.options.warn(`[agent] task ${taskId}: answer dropped, its connection is gone (the server has retried it elsewhere)`)
        return
      }
      // The response is spliced in already serialized, as the server does with payloads.
      const extra = `${answer.headers === undefined ? '' : `,"headers":${JSON.stringify(answer.headers)}`}${answer.retry === false ? ',"retry":false' : ''}`
      socket.send(`{"type":"task_response","payload":{"task_id":${JSON.stringify(taskId)},"status":${answer.status}${extra},"response":${answer.json}}}`)
    })
  }

  /** The server cancelled a task this agent holds: its handler's signal aborts (an --exec process is stopped). */
  private onCancel(taskId: string): void {
    const cancel = this.running.get(taskId)
    if (!cancel) return
    this.options.warn(`[agent] task ${taskId} cancelled by the server`)
    cancel.abort()
  }

  private parse(data: unknown): WsAgentInbound | undefined {
    let value: unknown
    try {
      value = JSON.parse(String(data))
    } catch {
      this.options.warn('[agent] ignored a message that is not JSON')
      return undefined
    }
    const result = wsAgentInboundSchema.safeParse(value)
    if (!result.success) {
      this.options.warn(`[agent] ignored an unexpected message: ${summarizeIssues(result.error)}`)
      return undefined
    }
    return result.data
  }

  private send(socket: WebSocket | undefined, message: unknown): void {
    if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message))
  }
}
