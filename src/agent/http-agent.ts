import type { Server } from 'bun'
import { jsonResponse } from '../errors.ts'
import { verify } from '../signing.ts'
import { certificateFailure, SERVER_CA_HINT } from '../tls-failures.ts'
import type { CertificatePair } from '../tls-files.ts'
import { heartbeatReplySchema } from '../wire/agent-hello.ts'
import type { ErrorBody } from '../wire/errors.ts'
import { NO_RETRY_HEADER } from '../wire/task.ts'
import { type Agent, AgentFatalError, type AgentOptions, Pause } from './agent.ts'
import { Backoff } from './backoff.ts'
import { answerTask, describeFailure } from './handler.ts'
import { Limiter } from './limiter.ts'

export interface HttpAgentOptions extends AgentOptions {
  /** The port `/work` listens on (0 picks a free one). */
  port: number
  /** Overrides the heartbeat period; by default a third of the server's client_ttl. */
  heartbeatIntervalMs?: number
  /** Serves /work over HTTPS with this certificate and tells the server so (`scheme: "https"`). */
  tls?: CertificatePair
  /** Runs only calls signed with this secret (the server's `signing_secret`); anything else gets 401. */
  signingSecret?: string
}

/** The server's default client_ttl, used until a heartbeat reply tells us the real one. */
const DEFAULT_CLIENT_TTL_S = 90
const HEARTBEAT_TIMEOUT_MS = 10_000

/**
 * An HTTP agent: serves `POST /work` and registers by heartbeat. A failed heartbeat is retried
 * with backoff, so an agent re-registers by itself once a restarted server is back.
 */
export class HttpAgent implements Agent {
  private readonly limiter: Limiter
  private readonly backoff = new Backoff()
  private readonly pause = new Pause()
  private server: Server<undefined> | undefined
  private registered = false
  private current = 0
  private stopping = false

  constructor(private readonly options: HttpAgentOptions) {
    this.limiter = new Limiter(options.concurrency)
  }

  get held(): number {
    return this.limiter.held
  }

  async run(): Promise<void> {
    const { port, tls, signingSecret } = this.options
    const server = Bun.serve({ port, ...(tls ? { tls } : {}), fetch: (request, bunServer) => this.onRequest(request, bunServer) })
    this.server = server
    const how = [tls ? 'over HTTPS' : '', signingSecret ? 'signed calls only' : ''].filter(Boolean).join(', ')
    this.options.log(`[agent] serving POST /work on port ${server.port}${how ? ` (${how})` : ''}`)
    try {
      while (!this.stopping) await this.pause.sleep(await this.heartbeat(this.options.weight))
      await this.limiter.idle()
    } finally {
      // Not forced: the last answers are still being written when their jobs end.
      await server.stop()
    }
  }

  async stop(): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    this.pause.wake()
    // Weight 0 tells the server to send no new tasks while the held ones finish; best effort.
    if (this.registered) await this.heartbeat(0).catch(() => undefined)
    await this.limiter.idle()
  }

  /** Sends one heartbeat; returns how long to wait before the next. Throws when the server refuses us. */
  private async heartbeat(weight: number | undefined): Promise<number> {
    const { nodeId, token, region, ip, heartbeatIntervalMs, tls, ca } = this.options
    const serverUrl = this.serverUrl
    const body = {
      node_id: nodeId,
      token,
      region,
      port: this.server?.port,
      ...(weight === undefined ? {} : { weight }),
      ...(ip ? { ip } : {}),
      ...(tls ? { scheme: 'https' } : {}),
    }
    let response: Response
    try {
      response = await fetch(`${serverUrl}/client/heartbeat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(HEARTBEAT_TIMEOUT_MS),
        ...(ca === undefined ? {} : { tls: { ca } }),
      })
    } catch (error) {
      const certificate = certificateFailure(error)
      return this.retryLater(`cannot reach ${serverUrl}: ${certificate ? `${certificate}; ${SERVER_CA_HINT}` : (error as Error).message}`)
    }
    const text = await response.text().catch(() => '')
    // 400, 401 and 403 are about what we send: repeating it would be refused the same way. A 409
    // (our node id is held by a live agent) and a 503 may pass: those are retried with back-off.
    if (response.status === 400 || response.status === 401 || response.status === 403) {
      throw new AgentFatalError(`registration refused (HTTP ${response.status}): ${errorOf(text)}`)
    }
    if (!response.ok) return this.retryLater(`heartbeat answered HTTP ${response.status}: ${errorOf(text)}`)
    const reply = heartbeatReplySchema.safeParse(parseJson(text))
    if (!reply.success) return this.retryLater(`unexpected heartbeat reply from ${serverUrl}: is this a Moonlight server?`)
    const ttlS = reply.data.client_ttl ?? DEFAULT_CLIENT_TTL_S
    if (!this.registered)
      this.options.log(
        `[agent] registered as ${nodeId} in ${region} at ${serverUrl} (HTTP, heartbeat every ${Math.round((heartbeatIntervalMs ?? (ttlS * 1000) / 3) / 100) / 10} s)`,
      )
    this.registered = true
    this.backoff.reset()
    // Three heartbeats per TTL: one lost heartbeat never expires the agent.
    return heartbeatIntervalMs ?? (ttlS * 1000) / 3
  }

  /** The server heartbeats go to now; a failure moves on to the next (a cluster's next instance). */
  private get serverUrl(): string {
    return this.options.servers[this.current % this.options.servers.length]!
  }

  private retryLater(reason: string): number {
    this.registered = false
    this.current++
    const delayMs = this.backoff.next()
    if (!this.stopping) this.options.warn(`[agent] ${reason}; retrying in ${(delayMs / 1000).toFixed(1)} s`)
    return delayMs
  }

  private async onRequest(request: Request, server: Server<undefined>): Promise<Response> {
    const { pathname } = new URL(request.url)
    if (pathname !== '/work') return Response.json({ error: `no route for ${request.method} ${pathname}` }, { status: 404 })
    if (request.method !== 'POST') return Response.json({ error: 'POST a JSON payload to /work' }, { status: 405 })
    // Sent before the server saw our weight 0: a 503 makes it retry on another agent.
    if (this.stopping) return Response.json({ error: 'the agent is shutting down' }, { status: 503 })
    let body: Uint8Array
    try {
      body = await request.bytes()
    } catch {
      return Response.json({ error: 'the body could not be read' }, { status: 400 })
    }
    // Checked before anything else: an unsigned call must not learn whether its payload would parse, nor run.
    const { signingSecret } = this.options
    if (signingSecret !== undefined) {
      const verdict = verify(signingSecret, request.headers, body, Date.now() / 1000)
      if (!verdict.ok) {
        this.options.warn(`[agent] refused a call to /work: ${verdict.reason}`)
        const refusal: ErrorBody = { error: `refused: ${verdict.reason}`, code: 'invalid_signature' }
        return jsonResponse(refusal, 401)
      }
    }
    let payload: unknown
    try {
      payload = JSON.parse(new TextDecoder().decode(body))
    } catch {
      return Response.json({ error: 'the body is not JSON' }, { status: 400 })
    }
    // Bun's idleTimeout would cut a long task; the server's task_timeout bounds it instead.
    server.timeout(request, 0)
    const taskId = request.headers.get('x-task-id') ?? `local-${crypto.randomUUID()}`
    // The server cuts the connection when it cancels the task (or its deadline passes): Bun aborts request.signal.
    const answer = await this.limiter.run(() => answerTask(this.options.handler, payload, taskId, request.signal))
    if (answer.status >= 500) this.options.warn(`[agent] task ${taskId} failed (${answer.status}): ${describeFailure(answer)}`)
    const headers = new Headers(answer.headers)
    const answerBody = headers.has('content-type') ? rawText(answer.json) : answer.json
    if (!headers.has('content-type')) headers.set('content-type', 'application/json')
    if (answer.retry === false) headers.set(NO_RETRY_HEADER, 'false')
    return new Response(answerBody, { status: answer.status, headers })
  }
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
