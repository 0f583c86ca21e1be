import type { Server, WebSocketHandler } from 'bun'
import type { Live } from '../live.ts'
import { MONITOR_TOPIC } from '../monitor.ts'
import { tooManyClients } from '../errors.ts'
import { regionTopic } from '../regions.ts'
import type { Registry } from '../registry.ts'
import { type WsInbound, wsInboundSchema } from '../schemas.ts'
import type { AgentSocket, SocketData, WsTransport } from '../transports/ws.ts'
import { summarizeIssues } from '../http/validate.ts'
import { MAX_JSON_DEPTH, type ObjectScan, scanObject } from '../json-text.ts'
import { Unregistered } from './unregistered.ts'

export interface WsDeps {
  live: Live
  registry: Registry
  transport: WsTransport
  /** What a dashboard gets when it joins the live feed. */
  monitorSnapshot: () => unknown
  onMonitorCountChange: (watchers: number) => void
  log?: (line: string) => void
}

/**
 * Agents and dashboards over one WebSocket path. Every message is validated; a bad one gets
 * `{"type":"error"}` and the connection stays open, except a bad token, which closes it.
 */
export class WsGateway {
  readonly sockets = new Set<AgentSocket>()
  /** Sockets that have neither registered nor joined the monitor feed yet. */
  private readonly unregistered = new Unregistered<AgentSocket>()
  private monitors = 0

  /** Bun's limit on one incoming message, fixed when the server starts. */
  readonly maxMessageBytes: number
  readonly handler: WebSocketHandler<SocketData>

  constructor(private readonly deps: WsDeps) {
    this.maxMessageBytes = deps.live.config.max_answer_bytes
    this.handler = this.makeHandler()
  }

  /** Upgrades a request on the WebSocket path, or answers why not. */
  upgrade(request: Request, server: Server<SocketData>): Response | undefined {
    if (this.sockets.size >= this.deps.live.config.ws.max_connections) {
      return Response.json({ error: `too many WebSocket connections (ws.max_connections = ${this.deps.live.config.ws.max_connections})`, code: 'too_many_connections' }, { status: 503 })
    }
    // A cap of their own, below max_connections: sockets that never register cannot take the registered agents' room.
    const { max_unregistered } = this.deps.live.config.ws
    if (this.unregistered.size >= max_unregistered) {
      return Response.json(
        { error: `too many WebSocket connections waiting to register (ws.max_unregistered = ${max_unregistered})`, code: 'too_many_unregistered' },
        { status: 503 },
      )
    }
    const data: SocketData = {
      remoteAddress: server.requestIP(request)?.address ?? '127.0.0.1',
      monitor: false,
      lastSeenMs: Date.now(),
      pending: new Map(),
      topics: [],
    }
    if (server.upgrade(request, { data })) return undefined
    return Response.json({ error: 'expected a WebSocket upgrade request', code: 'upgrade_required' }, { status: 426 })
  }

  private makeHandler(): WebSocketHandler<SocketData> {
    return {
      // We ping and time out silent peers ourselves (heartbeat_interval, read_timeout), per config.
      idleTimeout: 0,
      sendPings: false,
      maxPayloadLength: this.maxMessageBytes,
      open: (socket) => {
        this.sockets.add(socket)
        this.unregistered.add(socket, Date.now())
      },
      message: (socket, raw) => this.onMessage(socket, raw),
      pong: (socket) => this.markAlive(socket),
      drain: (socket) => this.deps.transport.drained(socket),
      close: (socket, code, reason) => {
        this.sockets.delete(socket)
        this.unregistered.delete(socket)
        if (socket.data.monitor) this.deps.onMonitorCountChange(--this.monitors)
        const { nodeId, connectionId } = socket.data
        // Bun cuts a socket whose message passes maxPayloadLength (max_answer_bytes at start-up) with this reason.
        const why = reason === TOO_BIG_REASON ? `sent a message larger than max_answer_bytes (${this.maxMessageBytes} bytes)` : undefined
        this.deps.transport.detach(socket, why && `the client ${why} and was disconnected`)
        if (nodeId !== undefined) this.deps.registry.remove(nodeId, why ? `disconnected: ${why}` : `disconnected (code ${code})`, connectionId)
      },
    }
  }

  /** Pings every socket; the pong (or any message) counts as a sign of life. */
  pingAll(): void {
    for (const socket of this.sockets) socket.ping()
  }

  /** Closes sockets silent for longer than read_timeout; their tasks fail over at once. */
  closeSilent(now: number): void {
    const limitMs = this.deps.live.config.ws.read_timeout * 1000
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
    const { register_timeout } = this.deps.live.config.ws
    const message = `register within ws.register_timeout (${register_timeout} s)`
    for (const socket of this.unregistered.takeOverdue(now, register_timeout * 1000)) {
      send(socket, { type: 'error', payload: { message, code: 'register_timeout' } })
      socket.close(1008, message)
    }
  }

  closeAll(code: number, reason: string): void {
    for (const socket of this.sockets) socket.close(code, reason)
  }

  /** Keeps a client's region topics in step with whether it may take tasks. */
  syncTopics(nodeId: string): void {
    const client = this.deps.registry.get(nodeId)
    if (!client || client.protocol !== 'ws') return
    const topics = this.deps.registry.canTakeTasks(client) ? this.deps.live.regions.chain(client.region).map(regionTopic) : []
    this.deps.transport.subscribe(nodeId, topics)
  }

  private markAlive(socket: AgentSocket): void {
    const now = Date.now()
    socket.data.lastSeenMs = now
    if (socket.data.nodeId !== undefined) this.deps.registry.touch(socket.data.nodeId, now)
  }

  private onMessage(socket: AgentSocket, raw: string | Buffer): void {
    this.markAlive(socket)
    if (typeof raw !== 'string') return sendError(socket, 'binary messages are not supported; send JSON text')
    // Whatever a peer sends, it ends as an error frame at worst: never as an exception that takes the process down.
    try {
      this.readMessage(socket, raw)
    } catch (error) {
      this.deps.log?.(`[mls] could not handle a message from ${socket.data.nodeId ?? socket.data.remoteAddress}: ${(error as Error).stack ?? error}`)
      sendError(socket, 'the server could not handle this message')
      const taskId = answeredTaskId(raw)
      if (taskId !== undefined) this.deps.transport.reject(socket, taskId, 'the server could not handle the client\'s task_response')
    }
  }

  private readMessage(socket: AgentSocket, raw: string): void {
    // Measured before parsing: a value nested 100 000 deep would overflow the stack of whatever walks it next.
    const scan = scanObject(raw)
    if (scan && scan.depth > MAX_JSON_DEPTH) {
      const problem = `message is nested deeper than ${MAX_JSON_DEPTH} levels`
      sendError(socket, problem, 'too_deep')
      const taskId = answeredTaskId(raw)
      if (taskId !== undefined) this.deps.transport.reject(socket, taskId, `the client's task_response was refused: ${problem}`)
      return
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(raw)
    } catch {
      return sendError(socket, 'message is not valid JSON')
    }
    const result = wsInboundSchema.safeParse(parsed)
    if (result.success) return this.dispatch(socket, result.data, raw, scan)
    const problem = `invalid message: ${summarizeIssues(result.error)}`
    sendError(socket, problem)
    // A malformed answer to a task we sent fails that attempt now (and is retried), rather than at the timeout.
    const taskId = malformedAnswerTaskId(parsed)
    if (taskId !== undefined) this.deps.transport.reject(socket, taskId, `the client's task_response was invalid: ${summarizeIssues(result.error)}`)
  }

  private dispatch(socket: AgentSocket, message: WsInbound, raw: string, scan: ObjectScan | undefined): void {
    const { registry, transport, live } = this.deps
    switch (message.type) {
      case 'register': {
        const hello = message.payload
        if (!live.tokens.has(hello.token)) {
          sendError(socket, 'invalid token')
          socket.close(1008, 'invalid token')
          return
        }
        if (socket.data.nodeId !== undefined && socket.data.nodeId !== hello.node_id) {
          return sendError(socket, `this connection is already registered as "${socket.data.nodeId}"`)
        }
        if (!registry.hasRoomFor(hello.node_id)) {
          sendError(socket, tooManyClients(live.config.max_clients).message, 'too_many_clients')
          // 1013 "try again later": an agent reconnects with back-off, and may find room then.
          socket.close(1013, 'too many clients')
          return
        }
        const { client } = registry.announce(
          { nodeId: hello.node_id, region: hello.region, protocol: 'ws', ip: hello.ip ?? socket.data.remoteAddress, port: hello.port ?? 0, weight: hello.weight ?? 1 },
          Date.now(),
          socket.data.connectionId,
        )
        socket.data.nodeId = client.nodeId
        socket.data.connectionId = client.connectionId
        this.unregistered.delete(socket)
        transport.attach(client.nodeId, socket)?.close(4000, 'replaced by a newer connection for this node_id')
        this.syncTopics(client.nodeId)
        send(socket, {
          type: 'registered',
          payload: {
            node_id: client.nodeId,
            region: client.region,
            weight: client.weight,
            heartbeat_interval: live.config.ws.heartbeat_interval,
            server_time: new Date().toISOString(),
          },
        })
        return
      }
      case 'heartbeat': {
        if (socket.data.nodeId === undefined) return sendError(socket, 'register before sending heartbeats')
        if (message.payload?.weight !== undefined) registry.setWeight(socket.data.nodeId, message.payload.weight)
        send(socket, { type: 'heartbeat_ack', payload: { server_time: new Date().toISOString() } })
        return
      }
      case 'task_response': {
        if (socket.data.nodeId === undefined) return sendError(socket, 'register before answering tasks')
        if (!transport.resolve(socket, message.payload, responseText(raw, scan))) {
          sendError(socket, `no task "${message.payload.task_id}" is waiting for this client (answered late, or never sent)`)
        }
        return
      }
      case 'monitor': {
        if (!live.tokens.has(message.payload.token)) {
          sendError(socket, 'invalid token')
          socket.close(1008, 'invalid token')
          return
        }
        if (!socket.data.monitor) {
          socket.data.monitor = true
          this.unregistered.delete(socket)
          socket.subscribe(MONITOR_TOPIC)
          this.deps.onMonitorCountChange(++this.monitors)
        }
        send(socket, { type: 'monitor_ok', payload: this.deps.monitorSnapshot() })
        return
      }
    }
  }
}

const TOO_BIG_REASON = 'Received too big message'

/** The text of a task_response's `response` as the client wrote it, to pass on without re-serializing. */
function responseText(raw: string, scan: ObjectScan | undefined): string | undefined {
  const payload = scan?.members.get('payload')
  const response = payload && scanObject(raw, payload[0], payload[1])?.members.get('response')
  return response && raw.slice(response[0], response[1])
}

/** The task a message that claims to be a task_response answers, read from its text alone (it may not parse). */
function answeredTaskId(raw: string): string | undefined {
  const top = scanObject(raw)
  const type = top?.members.get('type')
  const payload = top?.members.get('payload')
  if (!type || !payload || raw.slice(type[0], type[1]) !== '"task_response"') return undefined
  const taskId = scanObject(raw, payload[0], payload[1])?.members.get('task_id')
  if (!taskId) return undefined
  try {
    const value: unknown = JSON.parse(raw.slice(taskId[0], taskId[1]))
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

function send(socket: AgentSocket, message: unknown): void {
  socket.send(JSON.stringify(message))
}

function sendError(socket: AgentSocket, message: string, code?: string): void {
  send(socket, { type: 'error', payload: code === undefined ? { message } : { message, code } })
}
