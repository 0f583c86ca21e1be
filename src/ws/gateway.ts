import type { Server, WebSocketHandler } from 'bun'
import type { Clock } from '../clock.ts'
import type { Settings } from '../config/settings.ts'
import { errorFrame, errorResponse, MoonlightError } from '../errors.ts'
import { type RegistrationDeps, register } from '../fleet/registration.ts'
import type { Client, Registry } from '../fleet/registry.ts'
import type { MonitorFeed } from '../observe/monitor-feed.ts'
import { sourceAddress } from '../security/caller-address.ts'
import { type AgentSocket, type SocketData, socketData, type WsTransport } from '../transports/ws.ts'
import type { ErrorCode } from '../wire/errors.ts'
import { summarizeIssues } from '../wire/issues.ts'
import { MAX_JSON_DEPTH, type MemberSpan, memberSpan } from '../wire/json-text.ts'
import { commonTaskResponse, type HeartbeatAck, type Registered, type WsInbound, type WsRegister, wsInboundSchema } from '../wire/ws.ts'
import { OpenSockets } from './open-sockets.ts'
import { Unregistered } from './unregistered.ts'

export interface GatewayDeps {
  settings: Settings
  registry: Registry
  registration: RegistrationDeps
  transport: WsTransport
  feed: MonitorFeed
  clock: Clock
  log: (line: string) => void
  /** A message refused as malformed (its error code), for /metrics. */
  onBadMessage?: (code: string) => void
}

/**
 * Agents and dashboards over one WebSocket path. Every message is validated; a bad one gets an
 * `error` frame with a code and the connection stays open, except a bad token, which closes it.
 */
export class WsGateway {
  /** Every open socket: agents, dashboards and those not registered yet. */
  readonly sockets = new OpenSockets<AgentSocket>()
  /** Sockets that have neither registered nor joined the monitor feed yet. */
  private readonly unregistered = new Unregistered<AgentSocket>()
  /** Dashboards watching the feed (a few, looked at after every batch), with when each last got a snapshot. */
  private readonly monitors = new Map<AgentSocket, { snapshotMs: number; deferred?: () => void }>()

  /** Bun's limit on one incoming message, fixed when the server starts. */
  readonly maxMessageBytes: number
  readonly handler: WebSocketHandler<SocketData>

  constructor(private readonly deps: GatewayDeps) {
    this.maxMessageBytes = deps.settings.config.max_answer_bytes
    this.handler = {
      // We ping and time out silent peers ourselves (heartbeat_interval, read_timeout), per config.
      idleTimeout: 0,
      sendPings: false,
      maxPayloadLength: this.maxMessageBytes,
      open: (socket) => this.onOpen(socket),
      message: (socket, raw) => this.onMessage(socket, raw),
      pong: (socket) => this.markAlive(socket),
      drain: (socket) => this.deps.transport.drained(socket),
      close: (socket, code, reason) => this.onClose(socket, code, reason),
    }
  }

  /** Upgrades a request on the WebSocket path, or answers why not. */
  upgrade(request: Request, server: Server<SocketData>): Response | undefined {
    const { ws } = this.deps.settings.config
    // A browser always says where the page that opens a socket came from; agents send no Origin.
    // Another site's page must not use a visitor's network position to reach this endpoint.
    const origin = request.headers.get('origin')
    if (origin !== null && !this.originAllowed(origin, request)) {
      return errorResponse(
        new MoonlightError(
          403,
          'forbidden_origin',
          `WebSocket connections from ${origin} are not allowed: only from this server's own origin or ws.allowed_origins`,
        ),
      )
    }
    if (this.sockets.size >= ws.max_connections) {
      return errorResponse(new MoonlightError(503, 'too_many_connections', `too many WebSocket connections (ws.max_connections = ${ws.max_connections})`))
    }
    // A cap of their own, below max_connections: sockets that never register cannot take the registered agents' room.
    if (this.unregistered.size >= ws.max_unregistered) {
      return errorResponse(
        new MoonlightError(503, 'too_many_unregistered', `too many WebSocket connections waiting to register (ws.max_unregistered = ${ws.max_unregistered})`),
      )
    }
    const data = socketData(
      // Through trusted_proxies' X-Forwarded-For, as for HTTP: failed logins are counted by it, and the dashboard shows it.
      sourceAddress(server.requestIP(request)?.address, request.headers.get('x-forwarded-for'), this.deps.settings.trustedProxies),
      this.deps.clock.now(),
      urlToken(request.url),
    )
    if (server.upgrade(request, { data })) return undefined
    return errorResponse(new MoonlightError(426, 'upgrade_required', 'expected a WebSocket upgrade request'))
  }

  /** The server's own origin (as the request's Host names it), or one listed in ws.allowed_origins. */
  private originAllowed(origin: string, request: Request): boolean {
    if (this.deps.settings.config.ws.allowed_origins.includes(origin)) return true
    const host = request.headers.get('host')
    if (host === null) return false
    const scheme = request.url.startsWith('https:') ? 'https' : 'http'
    return origin.toLowerCase() === `${scheme}://${host.toLowerCase()}`
  }

  /** Pings every socket; the pong (or any message) counts as a sign of life. */
  pingAll(): void {
    for (const socket of this.sockets) socket.ping()
  }

  /** Closes sockets silent for longer than read_timeout; their tasks fail over at once. */
  closeSilent(now: number): void {
    const limitMs = this.deps.settings.config.ws.read_timeout * 1000
    for (const socket of this.sockets) {
      // A silent peer would not answer a close handshake: cut it.
      if (now - socket.data.lastSeenMs > limitMs) socket.terminate()
    }
  }

  /**
   * Closes sockets that have not registered (nor joined the monitor feed) within register_timeout.
   * Pongs do not count: a client's WebSocket answers pings by itself, so they prove nothing.
   */
  closeUnregistered(now: number): void {
    const { register_timeout } = this.deps.settings.config.ws
    const message = `register within ws.register_timeout (${register_timeout} s)`
    for (const socket of this.unregistered.takeOverdue(now, register_timeout * 1000)) {
      sendError(socket, message, 'register_timeout')
      socket.close(1008, message)
    }
  }

  closeAll(code: number, reason: string): void {
    for (const socket of this.sockets) socket.close(code, reason)
  }

  /**
   * Keeps a client's broadcast topic in step with whether it may take tasks: its own region's, as a
   * broadcast to any region publishes to each region under it that has clients (WsTransport.fanOut).
   */
  syncTopics(nodeId: string): void {
    const { registry } = this.deps
    const client = registry.get(nodeId)
    if (client?.protocol !== 'ws') return
    // An agent with slots gets broadcasts one by one (src/tasks/broadcast.ts), so a full one can be skipped.
    this.deps.transport.subscribe(nodeId, registry.canTakeTasks(client) && client.maxInFlight === undefined ? client.region : undefined)
  }

  private onOpen(socket: AgentSocket): void {
    this.sockets.add(socket)
    this.unregistered.add(socket, this.deps.clock.now())
  }

  private onClose(socket: AgentSocket, code: number, reason: string): void {
    this.sockets.delete(socket)
    this.unregistered.delete(socket)
    if (socket.data.monitor) {
      this.monitors.get(socket)?.deferred?.()
      this.monitors.delete(socket)
      this.deps.feed.leave()
    }
    const { nodeId, connectionId } = socket.data
    // Bun cuts a socket whose message passes maxPayloadLength (max_answer_bytes at start-up) with this reason.
    const why = reason === TOO_BIG_REASON ? `sent a message larger than max_answer_bytes (${this.maxMessageBytes} bytes)` : undefined
    this.deps.transport.detach(socket, why && `the client ${why} and was disconnected`)
    if (nodeId !== undefined) this.deps.registry.remove(nodeId, why ? `disconnected: ${why}` : `disconnected (code ${code})`, connectionId)
  }

  private markAlive(socket: AgentSocket): void {
    const now = this.deps.clock.now()
    // socket.data is a native getter: read once (it showed as markAlive's own time in the broadcast profile).
    const data = socket.data
    data.lastSeenMs = now
    data.heard++
    if (data.nodeId !== undefined) this.deps.registry.touch(data.nodeId, now)
  }

  private onMessage(socket: AgentSocket, raw: string | Buffer): void {
    this.markAlive(socket)
    if (typeof raw !== 'string') {
      sendError(socket, 'binary messages are not supported; send JSON text', 'binary_not_supported')
      this.deps.onBadMessage?.('binary_not_supported')
      return
    }
    // Whatever a peer sends, it ends as an error frame at worst: never as an exception that takes the process down.
    try {
      this.readMessage(socket, raw)
    } catch (error) {
      this.deps.log(`[mls] could not handle a message from ${socket.data.nodeId ?? socket.data.remoteAddress}: ${(error as Error).stack ?? error}`)
      sendError(socket, 'the server could not handle this message', 'internal')
      this.deps.onBadMessage?.('internal')
      const taskId = answeredTaskId(raw)
      if (taskId !== undefined) this.deps.transport.reject(socket, taskId, "the server could not handle the client's task_response")
    }
  }

  private readMessage(socket: AgentSocket, raw: string): void {
    // Measured before parsing: a value nested 100 000 deep would overflow the stack of whatever walks it next.
    const payload = memberSpan(raw, 'payload')
    if (payload.depth > MAX_JSON_DEPTH) {
      const problem = `message is nested deeper than ${MAX_JSON_DEPTH} levels`
      sendError(socket, problem, 'too_deep')
      this.deps.onBadMessage?.('too_deep')
      const taskId = answeredTaskId(raw)
      if (taskId !== undefined) this.deps.transport.reject(socket, taskId, `the client's task_response was refused: ${problem}`)
      return
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(raw)
    } catch {
      sendError(socket, 'message is not valid JSON', 'invalid_json')
      this.deps.onBadMessage?.('invalid_json')
      return
    }
    // Every task's answer comes this way: zod only for what the hand-written check does not take (and for its errors).
    const common = commonTaskResponse(parsed)
    if (common !== undefined) {
      this.dispatch(socket, common, raw, payload)
      return
    }
    const result = wsInboundSchema.safeParse(parsed)
    if (result.success) {
      this.dispatch(socket, result.data, raw, payload)
      return
    }
    sendError(socket, `invalid message: ${summarizeIssues(result.error)}`, 'invalid_message')
    this.deps.onBadMessage?.('invalid_message')
    // A malformed answer to a task we sent fails that attempt now (and is retried), rather than at the timeout.
    const taskId = malformedAnswerTaskId(parsed)
    if (taskId !== undefined) this.deps.transport.reject(socket, taskId, `the client's task_response was invalid: ${summarizeIssues(result.error)}`)
  }

  private dispatch(socket: AgentSocket, message: WsInbound, raw: string, payload: MemberSpan): void {
    const { registry, transport, settings } = this.deps
    switch (message.type) {
      case 'register': {
        const hello = message.payload
        // One register at a time per socket, each after the one before has settled: a register can
        // wait 1.5 s on the ping to its node's holder, and one sent meanwhile with another node id
        // would otherwise pass the already_registered check too, leaving a node bound to this socket
        // that its close does not remove.
        const registering: Promise<void> = (socket.data.registering ?? Promise.resolve())
          .then(() =>
            // Whatever goes wrong in there is that socket's error frame, never an unhandled rejection (which ends the process).
            this.register(socket, hello).catch((error: unknown) => {
              this.deps.log(`[mls] could not register ${hello.node_id}: ${(error as Error)?.stack ?? error}`)
              sendError(socket, 'the server could not handle this registration', 'internal')
            }),
          )
          .then(() => {
            // Settled and the last one: nothing waits for it, so an idle agent does not keep it.
            if (socket.data.registering === registering) socket.data.registering = undefined
          })
        socket.data.registering = registering
        return
      }
      case 'heartbeat': {
        if (socket.data.nodeId === undefined) {
          sendError(socket, 'register before sending heartbeats', 'not_registered')
          return
        }
        if (message.payload?.weight !== undefined) registry.setWeight(socket.data.nodeId, message.payload.weight)
        // Absent, the slots stay as announced: a WebSocket heartbeat says only what changed.
        if (message.payload?.max_in_flight !== undefined) registry.setMaxInFlight(socket.data.nodeId, message.payload.max_in_flight)
        const maxInFlight = registry.get(socket.data.nodeId)?.maxInFlight
        const ack: HeartbeatAck = {
          type: 'heartbeat_ack',
          payload: { server_time: new Date(this.deps.clock.now()).toISOString(), ...(maxInFlight === undefined ? {} : { max_in_flight: maxInFlight }) },
        }
        socket.send(JSON.stringify(ack))
        return
      }
      case 'task_response': {
        if (socket.data.nodeId === undefined) {
          sendError(socket, 'register before answering tasks', 'not_registered')
          return
        }
        if (!transport.resolve(socket, message.payload, responseText(raw, payload))) {
          sendError(socket, `no task "${message.payload.task_id}" is waiting for this client (answered late, or never sent)`, 'unknown_task')
        }
        return
      }
      case 'monitor': {
        let holder: string
        try {
          holder = settings.access.authorize({ token: message.payload.token, address: () => socket.data.remoteAddress, from: 'message' }, 'monitor').holder
        } catch (error) {
          if (!(error instanceof MoonlightError)) throw error
          this.refuse(socket, error)
          return
        }
        this.unregistered.delete(socket)
        socket.data.monitorHolder = holder
        this.watch(socket)
        return
      }
    }
  }

  /** Closes every dashboard socket whose token `revoked` says no longer may watch (a reload took its monitor role away). */
  closeMonitors(revoked: (holder: string) => boolean, reason: string): void {
    for (const socket of this.monitors.keys()) {
      if (socket.data.monitorHolder !== undefined && revoked(socket.data.monitorHolder)) socket.close(1008, reason)
    }
  }

  /**
   * After a feed batch went out: a dashboard that has not read what it was sent gets write_timeout
   * to catch up, as an agent does, then is cut. Otherwise each would hold its send buffer (Bun's
   * 16 MB) for as long as it sent a message now and then, and ask for snapshots to fill it.
   */
  watchMonitors(): void {
    for (const socket of this.monitors.keys()) this.watchBehind(socket)
  }

  /**
   * A dashboard joins the feed, or asks again for a snapshot: at once, or, if it had one less than
   * SNAPSHOT_EVERY_MS ago, once that time is up (asks in between are one). A snapshot of a large fleet
   * costs milliseconds of the thread every task runs on: a watcher asking in a loop must not stall them.
   */
  private watch(socket: AgentSocket): void {
    const now = this.deps.clock.now()
    const watching = this.monitors.get(socket)
    if (watching?.deferred) return
    if (watching && now - watching.snapshotMs < SNAPSHOT_EVERY_MS) {
      watching.deferred = this.deps.clock.after(watching.snapshotMs + SNAPSHOT_EVERY_MS - now, () => {
        watching.deferred = undefined
        if (this.monitors.has(socket)) this.watch(socket)
      })
      return
    }
    this.deps.feed.join(socket, socket.data.monitor)
    socket.data.monitor = true
    this.monitors.set(socket, { snapshotMs: now })
    this.watchBehind(socket)
  }

  private watchBehind(socket: AgentSocket): void {
    if (socket.getBufferedAmount() > 0) this.deps.transport.watchBackpressure(socket)
  }

  /** Registers the node speaking over `socket`, or says why not. */
  private async register(socket: AgentSocket, hello: WsRegister): Promise<void> {
    // Closed while an earlier register was decided: the registers queued behind it are moot.
    if (!this.sockets.has(socket)) return
    if (socket.data.nodeId !== undefined && socket.data.nodeId !== hello.node_id) {
      sendError(socket, `this connection is already registered as "${socket.data.nodeId}"`, 'already_registered')
      return
    }
    let client: Client
    // The original Moonlight's clients may put the token in the URL instead; either way, the same checks.
    const token = hello.token ?? socket.data.urlToken ?? ''
    try {
      client = await register(
        this.deps.registration,
        { ...hello, token },
        { protocol: 'ws', sourceIp: socket.data.remoteAddress, connectionId: socket.data.connectionId },
      )
    } catch (error) {
      if (!(error instanceof MoonlightError)) throw error
      this.refuse(socket, error)
      return
    }
    // The socket may have closed while the server asked the node's holder whether it is still there:
    // the record registered for it must not stay behind as a client nobody can reach.
    if (!this.sockets.has(socket)) {
      this.deps.registry.remove(client.nodeId, 'disconnected while registering', client.connectionId)
      return
    }
    socket.data.nodeId = client.nodeId
    socket.data.connectionId = client.connectionId
    // Before the topic is chosen: a string-format agent listens on the string variant of it.
    const payloadFormat = hello.payload_format ?? this.deps.settings.config.ws.payload_format
    // Registered again in the other format: the old variant's topic goes first, while it can still be named.
    if (socket.data.payloadFormat !== undefined && socket.data.payloadFormat !== payloadFormat) this.deps.transport.subscribe(client.nodeId, undefined)
    socket.data.payloadFormat = payloadFormat
    this.unregistered.delete(socket)
    this.deps.transport.attach(client.nodeId, socket)?.close(4000, 'replaced by a newer connection for this node_id')
    this.syncTopics(client.nodeId)
    const registered: Registered = {
      type: 'registered',
      payload: {
        node_id: client.nodeId,
        region: client.region,
        weight: client.weight,
        heartbeat_interval: this.deps.settings.config.ws.heartbeat_interval,
        server_time: new Date(this.deps.clock.now()).toISOString(),
        payload_format: socket.data.payloadFormat,
        // Echoed so an agent can tell its slots were understood (or that it announced none).
        ...(client.maxInFlight === undefined ? {} : { max_in_flight: client.maxInFlight }),
      },
    }
    socket.send(JSON.stringify(registered))
  }

  /**
   * A register or monitor refused: a token refused (bad, without the role or the region, or from an
   * address past auth.max_failures) closes the socket with 1008; no room closes it with "try again later" (1013).
   */
  private refuse(socket: AgentSocket, error: MoonlightError): void {
    const policy = POLICY_REFUSALS[error.code]
    if (policy) {
      sendError(socket, error.message, policy.code)
      socket.close(1008, policy.reason)
      return
    }
    sendError(socket, error.message, error.code)
    if (error.code === 'node_id_in_use') {
      socket.close(4009, 'node_id in use')
      return
    }
    // 1013 "try again later": an agent reconnects with back-off, and may find room then.
    socket.close(1013, 'too many clients')
  }

  /**
   * Whether the node's WebSocket still answers: a ping, and a short wait for the pong (or any
   * message). A newcomer with the same node id takes over only a connection that no longer answers.
   */
  async isAlive(nodeId: string): Promise<boolean> {
    const socket = this.deps.transport.socketOf(nodeId)
    if (!socket) return false
    const heard = socket.data.heard
    socket.ping()
    await new Promise<void>((resolve) => this.deps.clock.after(ALIVE_PROBE_MS, resolve))
    return this.sockets.has(socket) && socket.data.heard > heard
  }
}

/**
 * `?token=` of an upgrade URL, for a `register` without a token (the original Moonlight's clients).
 * Kept on the socket only, never logged: a URL is less safe than a header, as proxies log URLs.
 */
function urlToken(url: string): string | undefined {
  // Nearly every upgrade has no query: no URL parsing for them.
  if (!url.includes('?')) return undefined
  return new URL(url).searchParams.get('token') || undefined
}

const TOO_BIG_REASON = 'Received too big message'
/** At most one snapshot a second per dashboard (see WsGateway.watch); the dashboard asks every 15 s. */
const SNAPSHOT_EVERY_MS = 1000
/** How long a pong may take: generous for a link across continents, short for the agent waiting to register. */
const ALIVE_PROBE_MS = 1500

/** Refusals of a token, by the error's code: the frame's code (the seed's `invalid_token` for a bad one) and the close reason. */
const POLICY_REFUSALS: Partial<Record<ErrorCode, { code: ErrorCode; reason: string }>> = {
  unauthorized: { code: 'invalid_token', reason: 'invalid token' },
  forbidden: { code: 'forbidden', reason: 'forbidden' },
  too_many_failures: { code: 'too_many_failures', reason: 'too many failed authentications' },
}

function sendError(socket: AgentSocket, message: string, code: ErrorCode): void {
  socket.send(errorFrame(message, code))
}

/** The text of a task_response's `response` as the client wrote it, to pass on without re-serializing. */
function responseText(raw: string, payload: MemberSpan): string | undefined {
  const response = memberSpan(raw, 'response', payload.start, payload.end)
  return response.start === -1 ? undefined : raw.slice(response.start, response.end)
}

/** The task a message that claims to be a task_response answers, read from its text alone (it may not parse). */
function answeredTaskId(raw: string): string | undefined {
  const type = memberSpan(raw, 'type')
  const payload = memberSpan(raw, 'payload')
  if (payload.start === -1 || raw.slice(type.start, type.end) !== '"task_response"') return undefined
  const taskId = memberSpan(raw, 'task_id', payload.start, payload.end)
  if (taskId.start === -1) return undefined
  try {
    const value: unknown = JSON.parse(raw.slice(taskId.start, taskId.end))
    return typeof value === 'string' ? value : undefined
  } catch {
    return undefined
  }
}

function malformedAnswerTaskId(message: unknown): string | undefined {
  if (typeof message !== 'object' || message === null || (message as { type?: unknown }).type !== 'task_response') return undefined
  const taskId = (message as { payload?: { task_id?: unknown } }).payload?.task_id
  return typeof taskId === 'string' ? taskId : undefined
}
