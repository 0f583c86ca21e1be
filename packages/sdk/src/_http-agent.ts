import { Backoff, Pause } from './_backoff.ts'
import { Limiter } from './_limiter.ts'
import { listenWithNodeHttp } from './_node-listener.ts'
import { AgentFatalError, type AgentSettings, type Listen, type WorkListener, type WorkReply, type WorkRequest } from './agent.ts'
import { answerTask, describeFailure, messageOf, type TaskTrace } from './handler.ts'
import { type HeartbeatReply, NO_RETRY_HEADER } from './wire.ts'

/** The server's default client_ttl, used until a heartbeat reply tells us the real one. */
const DEFAULT_CLIENT_TTL_S = 90
const HEARTBEAT_TIMEOUT_MS = 10_000
/** How long a stopping agent waits for a server to hear that it leaves, before it leaves unheard. */
const GOODBYE_TIMEOUT_MS = 5_000
/** The shortest heartbeat period a server's client_ttl may ask for. */
const MIN_HEARTBEAT_MS = 100
/** The longest delay a timer honours (a 32-bit signed count of milliseconds); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** What a heartbeat came to: the reply's client_ttl, a refusal (with its failure line), or a failure worth retrying. */
type HeartbeatResult = { reply: { client_ttl: number } } | { refused: string; failure: string } | { failure: string }

export interface HttpAgentOptions {
  port: number
  ip: string | undefined
  heartbeatIntervalMs: number | undefined
  listen: Listen | undefined
}

/**
 * An HTTP agent: serves `POST /work` and registers by heartbeat. A failed heartbeat is retried
 * with backoff, so an agent re-registers by itself once a restarted server is back.
 */
export class HttpAgent {
  private readonly limiter: Limiter
  private readonly backoff = new Backoff()
  private readonly pause = new Pause()
  private listener: WorkListener | undefined
  private registered = false
  /** Registered at least once: the server may count on this agent, so it is told when the agent leaves. */
  private everRegistered = false
  /** The heartbeat under way: stop() cuts it short. */
  private attempt: AbortController | undefined
  private leave: () => void = () => {}
  /** Resolves when run() has said goodbye and answered the tasks in hand (or ended with an error). */
  private readonly left = new Promise<void>((resolve) => (this.leave = resolve))
  private current = 0
  private stopping = false

  constructor(
    private readonly settings: AgentSettings,
    private readonly options: HttpAgentOptions,
  ) {
    this.limiter = new Limiter(settings.concurrency)
  }

  get held(): number {
    return this.limiter.held
  }

  get port(): number | undefined {
    return this.listener?.port
  }

  async run(): Promise<void> {
    try {
      await this.serve()
    } finally {
      // stop() resolves here, whether the agent drained or ended with an error.
      this.leave()
    }
  }

  private async serve(): Promise<void> {
    const listen = this.options.listen ?? listenWithNodeHttp
    const listener = await listen(this.options.port, (request) => this.onWork(request))
    this.listener = listener
    if (!this.options.listen) this.settings.logger.info(`[agent] serving POST /work on port ${listener.port}`)
    try {
      while (!this.stopping) await this.pause.sleep(await this.heartbeat(this.settings.weight))
      // Said here, after the loop's last heartbeat has ended: a heartbeat with our old weight landing
      // after the weight 0 would put the agent back in service as it leaves.
      if (this.everRegistered) await this.sayGoodbye()
      await this.limiter.idle()
    } finally {
      // Not forced: the last answers are still being written when their jobs end.
      await listener.close()
    }
  }

  async stop(): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    this.pause.wake()
    // A heartbeat under way to a server that does not answer would hold the goodbye up to its own timeout.
    this.attempt?.abort()
    await this.left
  }

  /**
   * Weight 0 tells the server to send no new tasks while the held ones finish. Until it has heard
   * that, it counts on this agent for client_ttl: so the agent waits for the answer, a bounded time,
   * trying each server once, and says so when no server heard it.
   */
  private async sayGoodbye(): Promise<void> {
    const { servers, logger } = this.settings
    const deadline = AbortSignal.timeout(GOODBYE_TIMEOUT_MS)
    const failures: string[] = []
    for (let tried = 0; tried < servers.length && !deadline.aborted; tried++) {
      const serverUrl = servers[(this.current + tried) % servers.length]!
      const result = await this.postHeartbeat(serverUrl, 0, deadline)
      if ('reply' in result) {
        logger.info(`[agent] ${serverUrl} knows this agent is leaving: no new tasks`)
        return
      }
      failures.push(result.failure)
    }
    const why = deadline.aborted ? `no answer within ${GOODBYE_TIMEOUT_MS / 1000} s` : failures.join('; ')
    logger.warn(`[agent] could not tell the server this agent is leaving (${why}): it may count on this agent until its client_ttl passes`)
  }

  /** Sends one heartbeat; returns how long to wait before the next. Throws when the server refuses us. */
  private async heartbeat(weight: number | undefined): Promise<number> {
    const { nodeId, region } = this.settings
    const serverUrl = this.serverUrl
    // Its own timeout, or stop(): AbortSignal.any would do it in one line, but Node has it only from 20.3.
    const attempt = new AbortController()
    const timer = setTimeout(() => attempt.abort(new DOMException('The operation timed out.', 'TimeoutError')), HEARTBEAT_TIMEOUT_MS)
    this.attempt = attempt
    const result = await this.postHeartbeat(serverUrl, weight, attempt.signal).finally(() => clearTimeout(timer))
    // Cut short by stop(): the goodbye comes next, to this same server.
    if (this.stopping) return 0
    if ('refused' in result) throw new AgentFatalError(result.refused)
    if ('failure' in result) return this.retryLater(result.failure)
    const ttlS = result.reply.client_ttl > 0 ? result.reply.client_ttl : DEFAULT_CLIENT_TTL_S
    // Three heartbeats per TTL: one lost heartbeat never expires the agent. The server's word is
    // bounded: a TTL of a nanosecond would be a loop of POSTs, one past what a timer holds
    // (2^31-1 ms) a heartbeat every millisecond.
    const intervalMs = Math.min(MAX_TIMER_MS, this.options.heartbeatIntervalMs ?? Math.max(MIN_HEARTBEAT_MS, (ttlS * 1000) / 3))
    if (!this.registered) {
      this.settings.logger.info(`[agent] registered as ${nodeId} in ${region} at ${serverUrl} (HTTP, heartbeat every ${Math.round(intervalMs / 100) / 10} s)`)
      this.settings.onRegistered()
    }
    this.registered = true
    this.everRegistered = true
    this.backoff.reset()
    return intervalMs
  }

  /** One POST /client/heartbeat: the server's reply, a refusal (what we send is wrong) or a failure worth retrying. */
  private async postHeartbeat(serverUrl: string, weight: number | undefined, signal: AbortSignal): Promise<HeartbeatResult> {
    const { nodeId, token, region } = this.settings
    const { ip } = this.options
    const body = {
      node_id: nodeId,
      token,
      region,
      port: this.listener?.port,
      ...(weight === undefined ? {} : { weight }),
      ...(this.settings.maxInFlight === undefined ? {} : { max_in_flight: this.settings.maxInFlight }),
      ...(ip ? { ip } : {}),
      ...(this.listener?.scheme === 'https' ? { scheme: 'https' } : {}),
    }
    let response: Response
    let text: string
    try {
      response = await this.settings.fetch(`${serverUrl}/client/heartbeat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal,
      })
      text = await response.text()
    } catch (error) {
      return { failure: `cannot reach ${serverUrl}: ${this.settings.explainError(error) ?? messageOf(error)}` }
    }
    // 400, 401 and 403 are about what we send: repeating it would be refused the same way. A 409
    // (our node id is held by a live agent) and a 503 may pass: those are retried with back-off.
    if (response.status === 400 || response.status === 401 || response.status === 403) {
      const refused = `registration refused (HTTP ${response.status}): ${errorOf(text)}`
      return { refused, failure: refused }
    }
    if (!response.ok) return { failure: `heartbeat answered HTTP ${response.status}: ${errorOf(text)}` }
    const reply = parseJson(text) as Partial<HeartbeatReply> | undefined
    if (reply?.status !== 'ok') return { failure: `unexpected heartbeat reply from ${serverUrl}: is this a Moonlight server?` }
    return { reply: { client_ttl: typeof reply.client_ttl === 'number' ? reply.client_ttl : DEFAULT_CLIENT_TTL_S } }
  }

  /** The server heartbeats go to now; a failure moves on to the next (a cluster's next instance). */
  private get serverUrl(): string {
    return this.settings.servers[this.current % this.settings.servers.length]!
  }

  private retryLater(reason: string): number {
    this.registered = false
    this.current++
    const delayMs = this.backoff.next()
    if (!this.stopping) this.settings.logger.warn(`[agent] ${reason}; retrying in ${(delayMs / 1000).toFixed(1)} s`)
    return delayMs
  }

  private async onWork(request: WorkRequest): Promise<WorkReply> {
    if (request.path !== '/work') return jsonReply(404, { error: `no route for ${request.method} ${request.path}` })
    if (request.method !== 'POST') return jsonReply(405, { error: 'POST a JSON payload to /work' })
    // Sent before the server saw our weight 0: a 503 makes it retry on another agent.
    if (this.stopping) return jsonReply(503, { error: 'the agent is shutting down' })
    if (request.body === null) return jsonReply(400, { error: 'the body could not be read' })
    let payload: unknown
    try {
      payload = JSON.parse(new TextDecoder().decode(request.body))
    } catch {
      return jsonReply(400, { error: 'the body is not JSON' })
    }
    const taskId = request.headers.get('x-task-id') ?? `local-${crypto.randomUUID()}`
    // The server cuts the connection when it cancels the task (or its deadline passes): the signal aborts.
    const trace: TaskTrace = {}
    const traceparent = request.headers.get('traceparent')
    const tracestate = request.headers.get('tracestate')
    if (traceparent !== null) trace.traceparent = traceparent
    if (tracestate !== null) trace.tracestate = tracestate
    const answer = await this.limiter.run(() => answerTask(this.settings.handler, payload, taskId, request.signal, trace))
    if (answer.status >= 500) this.settings.logger.warn(`[agent] task ${taskId} failed (${answer.status}): ${describeFailure(answer)}`)
    const headers = new Headers(answer.headers)
    const body = headers.has('content-type') ? rawText(answer.json) : answer.json
    if (!headers.has('content-type')) headers.set('content-type', 'application/json')
    if (answer.retry === false) headers.set(NO_RETRY_HEADER, 'false')
    return { status: answer.status, headers, body }
  }
}

function jsonReply(status: number, body: unknown): WorkReply {
  return { status, headers: new Headers({ 'content-type': 'application/json' }), body: JSON.stringify(body) }
}

/** A string answer with its own content type is sent as that text (as the server does with a WebSocket answer); anything else as JSON. */
function rawText(json: string): string {
  const value = parseJson(json)
  return typeof value === 'string' ? value : json
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

function errorOf(text: string): string {
  const parsed = parseJson(text)
  const error = parsed && typeof parsed === 'object' && 'error' in parsed ? parsed.error : undefined
  return (typeof error === 'string' ? error : text.slice(0, 200)).replace(/\s+/g, ' ').trim() || 'no details'
}
