import type { ServerWebSocket } from 'bun'
import { regionTopic } from '../fleet/regions.ts'
import type { Client } from '../fleet/registry.ts'
import type { TraceHeaders } from '../observe/tracing/trace-context.ts'
import type { HeaderPolicy } from '../security/answer-headers.ts'
import type { Deadline, Expirable } from '../tasks/deadlines.ts'
import type { PayloadFormat } from '../wire/names.ts'
import { cancelFrame, type TaskResponse, taskFrame } from '../wire/ws.ts'
import { type Answer, AttemptError, type Transport, timedOut } from './types.ts'

/**
 * What the server keeps on each WebSocket connection. Every field is there from the start (see
 * socketData), so the object keeps one shape with its fields inline; what only a busy or a
 * dashboard socket needs is made when it is first needed, not held by every idle agent.
 */
export interface SocketData {
  remoteAddress: string
  /** Set once the socket registers as an agent. */
  nodeId: string | undefined
  connectionId: number | undefined
  /** How its task payloads go out, set when it registers (see taskFrame). */
  payloadFormat: PayloadFormat | undefined
  /** A token in the upgrade URL's `?token=`, for a `register` that carries none. Never logged. */
  urlToken: string | undefined
  /** The dashboard's live feed instead of an agent. */
  monitor: boolean
  /** The digest (security/access.ts tokenDigest) of the token a dashboard joined the feed with: a reload that revokes it closes the socket. */
  monitorHolder: string | undefined
  lastSeenMs: number
  /** Messages and pongs heard so far: whether a ping was answered, whatever the clock's resolution. */
  heard: number
  /** Tasks sent over this socket and not yet answered, by task id: failed over at once if it closes. Made at its first task. */
  pending: Map<string, Waiter> | undefined
  /** The register under way, which the next register on this socket waits for; undefined once it settled. */
  registering: Promise<void> | undefined
  /**
   * The region whose broadcast topic it listens on (its own: see fanOut), or undefined for none. The
   * client record's own string, so an idle agent holds no topic name of its own.
   */
  topicRegion: string | undefined
  writeTimer: ReturnType<typeof setTimeout> | undefined
  /** Its place among the gateway's open sockets (src/ws/open-sockets.ts); -1 before it opens and once it closed. */
  openAt: number
}

/** A new connection's data: nothing known of it but where it comes from. */
export function socketData(remoteAddress: string, nowMs: number, urlToken?: string): SocketData {
  return {
    remoteAddress,
    nodeId: undefined,
    connectionId: undefined,
    payloadFormat: undefined,
    urlToken,
    monitor: false,
    monitorHolder: undefined,
    lastSeenMs: nowMs,
    heard: 0,
    pending: undefined,
    registering: undefined,
    topicRegion: undefined,
    writeTimer: undefined,
    openAt: -1,
  }
}

export type AgentSocket = ServerWebSocket<SocketData>

/** One task's attempt on one socket, waiting for its task_response. */
export class Waiter implements Expirable {
  constructor(
    private readonly socket: AgentSocket,
    private readonly taskId: string,
    private readonly deadline: Deadline,
    private readonly onAnswer: (answer: Answer) => void,
    private readonly onFailure: (error: AttemptError) => void,
  ) {
    deadline.watch(this)
    socket.data.pending ??= new Map()
    socket.data.pending.set(taskId, this)
  }

  resolve(answer: Answer): void {
    if (this.settle()) this.onAnswer(answer)
  }

  reject(error: AttemptError): void {
    if (this.settle()) this.onFailure(error)
  }

  expire(): void {
    this.reject(timedOut())
  }

  /** False if it was already settled: an answer and a failure can race, only the first counts. */
  private settle(): boolean {
    const { pending } = this.socket.data
    if (pending?.get(this.taskId) !== this) return false
    pending.delete(this.taskId)
    this.deadline.unwatch(this)
    return true
  }
}

/**
 * Tasks over WebSocket: sends `{"type":"task",...}` to the client's socket and waits for its
 * `task_response`. A socket that closes fails its tasks at once so they are retried elsewhere.
 */
export class WsTransport implements Transport {
  private readonly sockets = new Map<string, AgentSocket>()
  /** Tasks waiting for the end of this event-loop turn to go out, per socket: task id, message, task id, message… */
  private outbox = new Map<AgentSocket, string[]>()
  private flushScheduled = false

  constructor(
    private readonly writeTimeoutMs: () => number,
    /** Sends one message to every subscriber of a topic (Bun's server.publish). */
    private readonly publish: (topic: string, message: string) => void,
    /** Which of an answer's headers reach the caller (answers.pass_headers, as reloaded). */
    private readonly headerPolicy: () => HeaderPolicy,
  ) {}

  /** Binds a node to its socket; returns the socket it replaces, which the caller closes. */
  attach(nodeId: string, socket: AgentSocket): AgentSocket | undefined {
    const previous = this.sockets.get(nodeId)
    this.sockets.set(nodeId, socket)
    return previous === socket ? undefined : previous
  }

  /** Forgets a closed socket and fails everything it still owed (retried elsewhere), saying `why` if known. */
  detach(socket: AgentSocket, why = 'the client disconnected before answering'): void {
    const { nodeId } = socket.data
    if (nodeId !== undefined && this.sockets.get(nodeId) === socket) this.sockets.delete(nodeId)
    clearTimeout(socket.data.writeTimer)
    const { pending } = socket.data
    if (pending) for (const waiter of [...pending.values()]) waiter.reject(new AttemptError('disconnected', why))
  }

  /** Tells whichever agent holds `taskId` over this instance's sockets that it was cancelled; false if none does. */
  cancel(taskId: string): boolean {
    let told = false
    for (const socket of this.sockets.values()) {
      if (socket.data.pending?.has(taskId) !== true) continue
      socket.send(cancelFrame(taskId))
      told = true
    }
    return told
  }

  socketOf(nodeId: string): AgentSocket | undefined {
    return this.sockets.get(nodeId)
  }

  send(client: Client, taskId: string, payloadJson: string, deadline: Deadline, _mayResend?: boolean, trace?: TraceHeaders): Promise<Answer> {
    const socket = this.sockets.get(client.nodeId)
    // Nothing was sent: the task never reached the agent (retry_on "unreachable").
    if (!socket) return Promise.reject(new AttemptError('unreachable', 'the client has no open connection'))
    const answer = this.expect(taskId, socket, deadline)
    let queue = this.outbox.get(socket)
    if (!queue) {
      queue = []
      this.outbox.set(socket, queue)
    }
    queue.push(taskId, taskFrame(taskId, payloadJson, socket.data.payloadFormat, trace))
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(this.flush)
    }
    return answer
  }

  /**
   * Sends the tasks queued during this event-loop turn, corked: one write per socket for all of them
   * instead of a syscall per task, which is most of a task's cost on a busy socket.
   */
  private readonly flush = (): void => {
    this.flushScheduled = false
    const outbox = this.outbox
    this.outbox = new Map()
    for (const [socket, queue] of outbox) {
      socket.cork(() => {
        for (let i = 0; i < queue.length; i += 2) {
          const sent = socket.send(queue[i + 1]!)
          if (sent === 0) socket.data.pending?.get(queue[i]!)?.reject(new AttemptError('dropped', "the client's send buffer is full"))
          else if (sent === -1) this.watchBackpressure(socket)
        }
      })
    }
  }

  /**
   * Sends one task to many clients through `publish`: each socket listens on its own region's topic
   * only (one subscription per agent, not one per region of its chain), so a task for a region goes
   * to the topic of each region at or under it that has one of `clients`, once per region, however
   * many clients there are. Every subscriber is an eligible client, so `clients` is who will answer.
   * Agents that take payloads as strings listen on a topic of their own (stringTopic), published to
   * only in a region where one of them is among `clients`: the object frame, and its path, stay as they were.
   */
  fanOut(_region: string, taskId: string, payloadJson: string, clients: readonly Client[], deadline: Deadline): Map<string, Promise<Answer>> {
    const answers = new Map<string, Promise<Answer>>()
    // Nearly always one region or a few, each's clients mostly in a row: a set of them, added to when the region changes.
    const regions = new Set<string>()
    let stringRegions: Set<string> | undefined
    let last: string | undefined
    let lastString: string | undefined
    for (const { nodeId, region } of clients) {
      const socket = this.sockets.get(nodeId)
      if (!socket) {
        answers.set(nodeId, Promise.reject(new AttemptError('unreachable', 'the client has no open connection')))
        continue
      }
      answers.set(nodeId, this.expect(taskId, socket, deadline))
      if (socket.data.payloadFormat === 'string') {
        stringRegions ??= new Set()
        if (region !== lastString) stringRegions.add(region)
        lastString = region
      } else {
        if (region !== last) regions.add(region)
        last = region
      }
    }
    if (regions.size > 0) {
      const frame = taskFrame(taskId, payloadJson)
      for (const region of regions) this.publish(regionTopic(region), frame)
    }
    if (stringRegions) {
      const frame = taskFrame(taskId, payloadJson, 'string')
      for (const region of stringRegions) this.publish(stringTopic(regionTopic(region)), frame)
    }
    return answers
  }

  /**
   * Delivers a client's task_response; false if no task with that id is waiting on this socket.
   * `responseJson` is the `response` value's own text in the message, passed on as it came.
   */
  resolve(socket: AgentSocket, response: TaskResponse, responseJson: string | undefined): boolean {
    const waiter = socket.data.pending?.get(response.task_id)
    if (!waiter) return false
    waiter.resolve(toAnswer(response, responseJson, this.headerPolicy()))
    return true
  }

  /** Fails the attempt `taskId` this socket owes (it answered with something unusable); false if none is waiting. */
  reject(socket: AgentSocket, taskId: string, message: string): boolean {
    const waiter = socket.data.pending?.get(taskId)
    if (!waiter) return false
    waiter.reject(new AttemptError('invalid_answer', message))
    return true
  }

  /** The socket drained its send queue in time. */
  drained(socket: AgentSocket): void {
    clearTimeout(socket.data.writeTimer)
    socket.data.writeTimer = undefined
  }

  /**
   * Points a client's socket at the broadcast topic of `region` (its own), in its payload format's
   * variant, or at none (undefined) while it must get no broadcasts.
   */
  subscribe(nodeId: string, region: string | undefined): void {
    const socket = this.sockets.get(nodeId)
    if (!socket) return
    const { data } = socket
    if (data.topicRegion === region) return
    if (data.topicRegion !== undefined) socket.unsubscribe(this.topicOf(data, data.topicRegion))
    if (region !== undefined) socket.subscribe(this.topicOf(data, region))
    data.topicRegion = region
  }

  private topicOf(data: SocketData, region: string): string {
    return data.payloadFormat === 'string' ? stringTopic(regionTopic(region)) : regionTopic(region)
  }

  private expect(taskId: string, socket: AgentSocket, deadline: Deadline): Promise<Answer> {
    if (deadline.expired) return Promise.reject(timedOut())
    return new Promise<Answer>((resolve, reject) => {
      new Waiter(socket, taskId, deadline, resolve, reject)
    })
  }

  /** A client that does not read its queue within write_timeout is cut off; its tasks fail over. */
  private watchBackpressure(socket: AgentSocket): void {
    if (socket.data.writeTimer) return
    // terminate, not close: a peer that does not read would never read a close frame either.
    socket.data.writeTimer = setTimeout(() => socket.terminate(), this.writeTimeoutMs())
  }
}

/** The topic on which agents taking string payloads get a region's broadcasts; a prefix, since region names may hold ":". */
function stringTopic(topic: string): string {
  return `string:${topic}`
}

function toAnswer(response: TaskResponse, responseJson: string | undefined, policy: HeaderPolicy): Answer {
  const headers = policy.filter(response.headers)
  const noRetry = response.retry === false ? { retry: false as const } : {}
  // A string with its own content type is a body as-is; anything else is a JSON value.
  if (typeof response.response === 'string' && headers['content-type']) {
    return { status: response.status, headers, body: response.response, ...noRetry }
  }
  headers['content-type'] ??= 'application/json'
  return { status: response.status, headers, body: responseJson ?? 'null', ...noRetry }
}
