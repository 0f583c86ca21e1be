import { Backoff, Pause } from './_backoff.ts'
import { Limiter } from './_limiter.ts'
import { OPEN, openWebSocket, parseInbound } from './_websocket.ts'
import { AgentFatalError, type AgentSettings, type WebSocketLike } from './agent.ts'
import { answerTask, describeFailure, messageOf, type TaskTrace } from './handler.ts'

interface SessionEnd {
  registered: boolean
  reason: string
  /** Set when the server refused us: the agent stops instead of reconnecting. */
  fatal?: string
}

/** Refusals that say "not now" rather than "never": the agent reconnects with back-off instead of giving up. */
const PASSING_REFUSALS = new Set(['register_timeout', 'too_many_clients', 'node_id_in_use'])
/** A server this many heartbeat intervals silent is presumed gone (a dead link sends no close). */
const SILENT_INTERVALS = 3
/** How long a connection may go without `registered` (the server's own register_timeout is 10 s by default). */
const REGISTER_WAIT_MS = 15_000
/** A session shorter than this does not reset the back-off (nor, with several servers, skip the wait). */
const STABLE_SESSION_MS = 5000
/** The longest delay setInterval honours (a 32-bit signed count of milliseconds); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1
/** Close codes after which reconnecting would only repeat the refusal. */
const FATAL_CLOSE_CODES = new Map([[1008, 'the server refused the token']])

/**
 * A WebSocket agent: registers, heartbeats, answers `task` messages with the handler (at most
 * `concurrency` at once), and reconnects with backoff, registering again, when the server goes away.
 */
export class WsAgent {
  private readonly limiter: Limiter
  /** Tasks being handled, by id: a cancel from the server aborts the one it names. */
  private readonly running = new Map<string, AbortController>()
  private readonly backoff = new Backoff()
  private readonly pause = new Pause()
  private readonly wsUrls: string[]
  private readonly open: (url: string) => WebSocketLike | Promise<WebSocketLike>
  private socket: WebSocketLike | undefined
  private stopping = false
  /** The server being tried, as an index into wsUrls. */
  private current = 0
  readonly port = undefined

  constructor(
    private readonly settings: AgentSettings,
    options: { wsPath: string; webSocket: ((url: string) => WebSocketLike | Promise<WebSocketLike>) | undefined },
  ) {
    this.limiter = new Limiter(settings.concurrency)
    this.wsUrls = settings.servers.map((server) => `${server.replace(/^http/, 'ws')}${options.wsPath}`)
    this.open = options.webSocket ?? openWebSocket
  }

  private get wsUrl(): string {
    return this.wsUrls[this.current % this.wsUrls.length]!
  }

  get held(): number {
    return this.limiter.held
  }

  async run(): Promise<void> {
    while (!this.stopping) {
      const startedMs = Date.now()
      const end = await this.session()
      if (end.fatal) throw new AgentFatalError(end.fatal)
      if (this.stopping) break
      // Only a session that lasted resets the back-off: servers that register the agent and close at
      // once would otherwise have it reconnect in a tight loop.
      const lasted = end.registered && Date.now() - startedMs >= STABLE_SESSION_MS
      if (lasted) this.backoff.reset()
      // With several servers, the next one: an instance that died should not hold the agent back.
      this.current++
      const delayMs = this.wsUrls.length > 1 && lasted ? 0 : this.backoff.next()
      const next = this.wsUrls.length > 1 ? ` (next: ${this.wsUrl})` : ''
      this.settings.logger.warn(
        `[agent] ${end.registered ? 'disconnected' : 'cannot connect'}: ${end.reason}; reconnecting in ${(delayMs / 1000).toFixed(1)} s${next}`,
      )
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
  private async session(): Promise<SessionEnd> {
    const { settings } = this
    let socket: WebSocketLike
    try {
      socket = await this.open(this.wsUrl)
    } catch (error) {
      // No WebSocket implementation at all is a set-up mistake, not a passing failure.
      return { registered: false, reason: messageOf(error), fatal: messageOf(error) }
    }
    this.socket = socket
    return new Promise((resolve) => {
      let registered = false
      let fatal: string | undefined
      let passing = false
      let lastError: string | undefined
      let lastHeardMs = Date.now()
      let heartbeat: ReturnType<typeof setInterval> | undefined
      let ended = false
      // A server that takes the connection and then says nothing must not hold the agent for ever: with
      // no `registered` in time, it is dropped, and the agent moves on (to the next server, if it has several).
      const registerTimer = setTimeout(() => {
        socket.close(4002, 'no registration')
        end(`not registered within ${REGISTER_WAIT_MS / 1000} s`)
      }, REGISTER_WAIT_MS)
      const end = (reason: string) => {
        if (ended) return
        ended = true
        clearTimeout(registerTimer)
        clearInterval(heartbeat)
        if (this.socket === socket) this.socket = undefined
        resolve({ registered, reason, fatal })
      }

      let opened = false
      socket.addEventListener('open', () => {
        opened = true
        const { nodeId, token, region, weight, maxInFlight } = settings
        this.send(socket, {
          type: 'register',
          payload: {
            node_id: nodeId,
            token,
            region,
            ...(weight === undefined ? {} : { weight }),
            ...(maxInFlight === undefined ? {} : { max_in_flight: maxInFlight }),
          },
        })
      })
      socket.addEventListener('message', (event: { data: unknown }) => {
        lastHeardMs = Date.now()
        const message = parseInbound(String(event.data))
        if (typeof message === 'string') {
          settings.logger.warn(`[agent] ignored an unexpected message: ${message}`)
          return
        }
        switch (message.type) {
          case 'registered': {
            registered = true
            clearTimeout(registerTimer)
            const { node_id, region, weight, heartbeat_interval } = message.payload
            settings.logger.info(`[agent] registered as ${node_id} in ${region} (weight ${weight}) at ${this.wsUrl}`)
            settings.onRegistered()
            if (this.stopping) this.send(socket, { type: 'heartbeat', payload: { weight: 0 } })
            // Past 2^31-1 ms a timer fires after 1 ms: a server asking for a heartbeat every 30 days
            // (or a hostile one) would get one every millisecond. The longest a timer holds is long enough.
            const intervalMs = Math.min(heartbeat_interval * 1000, MAX_TIMER_MS)
            // A second `registered` (a confused or hostile server) replaces the timer: one left running
            // would add a heartbeat per interval, and outlive the session, since `end` clears only the last.
            clearInterval(heartbeat)
            heartbeat = setInterval(() => {
              if (Date.now() - lastHeardMs > SILENT_INTERVALS * intervalMs) {
                socket.close(4002, 'server silent')
                // Rounded: 3 × 0.1 s is 0.30000000000000004 in floating point, not what a log line should say.
                end(`no word from the server for ${Math.round(SILENT_INTERVALS * heartbeat_interval * 1000) / 1000} s`)
                return
              }
              this.send(socket, { type: 'heartbeat' })
            }, intervalMs)
            return
          }
          case 'heartbeat_ack':
            return
          case 'task':
            return this.onTask(socket, message.task_id, message.payload, traceOf(message))
          case 'cancel':
            return this.onCancel(message.task_id)
          case 'error':
            // Before registration the only message we sent is `register`: an error means it was refused.
            if (registered) settings.logger.warn(`[agent] the server reported: ${message.payload.message}`)
            else if (PASSING_REFUSALS.has(message.payload.code ?? '')) {
              passing = true
              settings.logger.warn(`[agent] not registered yet: ${message.payload.message} (${message.payload.code})`)
            } else {
              fatal = `registration refused: ${message.payload.message}`
              socket.close(1000, 'registration refused')
            }
            return
        }
      })
      socket.addEventListener('error', (event: { message?: string; error?: unknown }) => {
        // Bun's error event carries a TLS failure's code on its `error`; Node's and the `ws` package's their message.
        lastError = settings.explainError(event.error ?? event.message) ?? (event.message || messageOfCause(event.error) || 'connection error')
        // Node 20's WebSocket reports a failed connect with an error and no close: that is the end too.
        if (!opened) end(lastError)
      })
      socket.addEventListener('close', (event: { code: number; reason?: string }) => {
        const refusal = FATAL_CLOSE_CODES.get(event.code)
        if (refusal && !this.stopping && !passing) fatal ??= refusal
        end(event.code === 1006 ? (lastError ?? 'connection lost') : `closed with code ${event.code}${event.reason ? ` (${event.reason})` : ''}`)
      })
    })
  }

  private onTask(socket: WebSocketLike, taskId: string, payload: unknown, trace: TaskTrace): void {
    if (this.stopping) {
      // Sent before the server saw our weight 0: a 503 makes it retry on another agent.
      this.send(socket, { type: 'task_response', payload: { task_id: taskId, status: 503, response: { error: 'the agent is shutting down' } } })
      return
    }
    // A task id already running here (a confused or hostile server sent it twice) runs once: a second
    // run would answer twice, and its end would take the first one's cancel away.
    if (this.running.has(taskId)) {
      this.settings.logger.warn(`[agent] ignored task ${taskId}: a task of that id is already running here`)
      return
    }
    const cancel = new AbortController()
    this.running.set(taskId, cancel)
    // Sending the answer is part of the job, so a graceful stop waits until it has left.
    this.limiter
      .run(async () => {
        let answer: Awaited<ReturnType<typeof answerTask>>
        try {
          answer = await answerTask(this.settings.handler, payload, taskId, cancel.signal, trace)
        } finally {
          if (this.running.get(taskId) === cancel) this.running.delete(taskId)
        }
        // The server has let the task go: an answer would be dropped.
        if (cancel.signal.aborted) return
        if (answer.status >= 500) this.settings.logger.warn(`[agent] task ${taskId} failed (${answer.status}): ${describeFailure(answer)}`)
        if (socket.readyState !== OPEN) {
          this.settings.logger.warn(`[agent] task ${taskId}: answer dropped, its connection is gone (the server has retried it elsewhere)`)
          return
        }
        // The response is spliced in already serialized, as the server does with payloads.
        const extra = `${answer.headers === undefined ? '' : `,"headers":${JSON.stringify(answer.headers)}`}${answer.retry === false ? ',"retry":false' : ''}`
        socket.send(`{"type":"task_response","payload":{"task_id":${JSON.stringify(taskId)},"status":${answer.status}${extra},"response":${answer.json}}}`)
      })
      .catch((error: unknown) => {
        // Never an unhandled rejection: in `moonlight agent` that ends the process, and every task with it.
        this.settings.logger.warn(`[agent] task ${taskId}: could not answer: ${messageOf(error)}`)
      })
  }

  /** The server cancelled a task this agent holds: its handler's signal aborts. */
  private onCancel(taskId: string): void {
    const cancel = this.running.get(taskId)
    if (!cancel) return
    this.settings.logger.warn(`[agent] task ${taskId} cancelled by the server`)
    cancel.abort()
  }

  private send(socket: WebSocketLike | undefined, message: unknown): void {
    if (socket?.readyState === OPEN) socket.send(JSON.stringify(message))
  }
}

function messageOfCause(error: unknown): string {
  return error instanceof Error ? error.message : ''
}

/** A task frame's trace context (strings only: the frame is the server's, but the SDK checks by hand). */
function traceOf(frame: { traceparent?: unknown; tracestate?: unknown }): TaskTrace {
  const trace: TaskTrace = {}
  if (typeof frame.traceparent === 'string') trace.traceparent = frame.traceparent
  if (typeof frame.tracestate === 'string') trace.tracestate = frame.tracestate
  return trace
}
