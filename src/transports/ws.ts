import type { ServerWebSocket } from 'bun'
import { regionTopic } from '../fleet/regions.ts'
import type { Client } from '../fleet/registry.ts'
import type { TraceHeaders } from '../observe/tracing/trace-context.ts'
import type { HeaderPolicy } from '../security/answer-headers.ts'
import type { Deadline, Expirable } from '../tasks/deadlines.ts'
import type { PayloadFormat } from '../wire/names.ts'
import { cancelFrame, type TaskResponse, taskFrame } from '../wire/ws.ts'
import { TurnBatches } from './turn-batches.ts'
import { type Answer, AttemptError, type FanOutSink, type Transport, timedOut } from './types.ts'

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
  pending: Map<string, PendingTask> | undefined
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

/** A task sent over a socket, waiting for its task_response: settled once, by an answer or a failure, whichever comes first. */
export interface PendingTask {
  /** `checkedJson`: see FanOutSink.answered. */
  resolve(answer: Answer, checkedJson: boolean): void
  reject(error: AttemptError): void
}

/** One task's attempt on one socket, waiting for its task_response. */
export class Waiter implements Expirable, PendingTask {
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
  /**
   * Tasks waiting for the end of this event-loop turn to go out, per socket: task id, message, task id,
   * message… Each socket's list is kept and emptied, not made anew each turn.
   */
  private readonly outbox = new Map<AgentSocket, string[]>()
  private readonly turn = new TurnBatches<AgentSocket>((socket) => this.flush(socket))
  /** The socket being flushed, for sendCorked (one callback for every socket, not a closure per socket per turn). */
  private corked: AgentSocket | undefined = undefined

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
    this.outbox.delete(socket)
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
    const frame = taskFrame(taskId, payloadJson, socket.data.payloadFormat, trace)
    let queue = this.outbox.get(socket)
    // An agent with no other task in flight has nothing to share a write with: its task goes at once,
    // without waiting for the end of the turn (at low load, every task).
    if (socket.data.pending?.size === 1 && (queue === undefined || queue.length === 0)) {
      this.sent(socket, taskId, socket.send(frame))
      return answer
    }
    if (!queue) {
      queue = []
      this.outbox.set(socket, queue)
    }
    if (queue.length === 0) this.turn.add(socket)
    queue.push(taskId, frame)
    return answer
  }

  /**
   * Sends a socket's tasks queued during this event-loop turn, corked: one write for all of them
   * instead of a syscall per task, which is most of a task's cost on a busy socket.
   */
  private flush(socket: AgentSocket): void {
    // Gone since (detach dropped its list): its tasks were failed over already.
    if (!this.outbox.get(socket)?.length) return
    this.corked = socket
    socket.cork(this.sendCorked)
    this.corked = undefined
  }

  private readonly sendCorked = (): void => {
    const socket = this.corked!
    const queue = this.outbox.get(socket)!
    for (let i = 0; i < queue.length; i += 2) this.sent(socket, queue[i]!, socket.send(queue[i + 1]!))
    queue.length = 0
  }

  /** What became of a task's frame: dropped (the client's send buffer is full: the task fails over), queued behind backpressure, or sent. */
  private sent(socket: AgentSocket, taskId: string, result: number): void {
    if (result === 0) socket.data.pending?.get(taskId)?.reject(new AttemptError('dropped', "the client's send buffer is full"))
    else if (result === -1) this.watchBackpressure(socket)
  }

  /**
   * Sends one task to many clients through `publish`: each socket listens on its own region's topic
   * only (one subscription per agent, not one per region of its chain), so a task for a region goes
   * to the topic of each region at or under it that has one of `clients`, once per region, however
   * many clients there are. Every subscriber is an eligible client, so `clients` is who will answer.
   * Agents that take payloads as strings listen on a topic of their own (stringTopic), published to
   * only in a region where one of them is among `clients`: the object frame, and its path, stay as they were.
   */
  fanOut(_region: string, taskId: string, payloadJson: string, clients: readonly Client[], deadline: Deadline, sink: FanOutSink, trace?: TraceHeaders): void {
    const group = new FanOutWaiters(deadline, sink)
    // Nearly always one region or a few: each is published to once.
    const regions = new Set<string>()
    let stringRegions: Set<string> | undefined
    for (let index = 0; index < clients.length; index++) {
      const { nodeId, region } = clients[index]!
      const socket = this.sockets.get(nodeId)
      if (!socket) sink.failed(index, new AttemptError('unreachable', 'the client has no open connection'))
      else if (deadline.expired) sink.failed(index, timedOut())
      else {
        const data = socket.data
        group.add(data, taskId, index)
        if (data.payloadFormat !== 'string') regions.add(region)
        else {
          stringRegions ??= new Set()
          stringRegions.add(region)
        }
      }
    }
    group.watch()
    if (regions.size > 0) {
      const frame = taskFrame(taskId, payloadJson, 'object', trace)
      for (const region of regions) this.publish(regionTopic(region), frame)
    }
    if (stringRegions) {
      const frame = taskFrame(taskId, payloadJson, 'string', trace)
      for (const region of stringRegions) this.publish(stringTopic(regionTopic(region)), frame)
    }
  }

  /**
   * Delivers a client's task_response; false if no task with that id is waiting on this socket.
   * `responseJson` is the `response` value's own text in the message, passed on as it came.
   */
  resolve(socket: AgentSocket, response: TaskResponse, responseJson: string | undefined): boolean {
    const waiter = socket.data.pending?.get(response.task_id)
    if (!waiter) return false
    const answer = toAnswer(response, responseJson, this.headerPolicy())
    // The body is the response's own text, trimmed by memberSpan, from a message that parsed and was no deeper than the limit.
    waiter.resolve(answer, responseJson !== undefined && answer.body === responseJson)
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

  /**
   * A socket that does not read its queue within write_timeout is cut off; an agent's tasks fail over.
   * The gateway calls this too, for a dashboard behind on the feed.
   */
  watchBackpressure(socket: AgentSocket): void {
    if (socket.data.writeTimer) return
    // terminate, not close: a peer that does not read would never read a close frame either.
    socket.data.writeTimer = setTimeout(() => socket.terminate(), this.writeTimeoutMs())
  }
}

/**
 * The attempts of one fan-out, watching the task's deadline as one: a single watcher per broadcast
 * instead of one per socket added to (and deleted from) the deadline's set on every answer.
 */
class FanOutWaiters implements Expirable {
  private readonly parts: FanOutPart[] = []
  private open = 0

  constructor(
    private readonly deadline: Deadline,
    readonly sink: FanOutSink,
  ) {}

  add(data: SocketData, taskId: string, index: number): void {
    const part = new FanOutPart(this, data, taskId, index)
    data.pending ??= new Map()
    data.pending.set(taskId, part)
    this.parts.push(part)
    this.open++
  }

  /** Watches the deadline if any part waits; called once, after every part was added. */
  watch(): void {
    if (this.open > 0) this.deadline.watch(this)
  }

  /** One part settled; the last stops watching. */
  settled(): void {
    if (--this.open === 0) this.deadline.unwatch(this)
  }

  expire(): void {
    for (const part of this.parts) part.reject(timedOut())
  }
}

/** One socket's part of a fan-out. */
class FanOutPart implements PendingTask {
  constructor(
    private readonly group: FanOutWaiters,
    private readonly data: SocketData,
    private readonly taskId: string,
    private readonly index: number,
  ) {}

  resolve(answer: Answer, checkedJson: boolean): void {
    if (this.settle()) this.group.sink.answered(this.index, answer, checkedJson)
  }

  reject(error: AttemptError): void {
    if (this.settle()) this.group.sink.failed(this.index, error)
  }

  /** False if it was already settled (an answer and a failure can race) or another task took its place. */
  private settle(): boolean {
    const { pending } = this.data
    if (pending?.get(this.taskId) !== this) return false
    pending.delete(this.taskId)
    this.group.settled()
    return true
  }
}

/** The topic on which agents taking string payloads get a region's broadcasts; a prefix, since region names may hold ":". */
function stringTopic(topic: string): string {
  return `string:${topic}`
}

/** Every answer that names no headers of its own: a JSON value, one record shared by them all (see Answer.sharedHeaders). */
const JSON_ANSWER_HEADERS: Record<string, string> = Object.freeze({ 'content-type': 'application/json' })

function toAnswer(response: TaskResponse, responseJson: string | undefined, policy: HeaderPolicy): Answer {
  const headers = isEmpty(response.headers) ? undefined : policy.filter(response.headers)
  let answer: Answer
  // Nearly every answer names no headers: no record made and filtered per task, and the caller's headers made once (src/http/task-outcome.ts).
  if (headers === undefined) answer = { status: response.status, headers: JSON_ANSWER_HEADERS, body: responseJson ?? 'null', sharedHeaders: true }
  // A string with its own content type is a body as-is; anything else is a JSON value.
  else if (typeof response.response === 'string' && headers['content-type']) answer = { status: response.status, headers, body: response.response }
  else {
    headers['content-type'] ??= 'application/json'
    answer = { status: response.status, headers, body: responseJson ?? 'null' }
  }
  // Set rather than spread in: a spread per answer showed in the broadcast's profile.
  if (response.retry === false) answer.retry = false
  return answer
}

function isEmpty(record: Record<string, string>): boolean {
  for (const _ in record) return false
  return true
}
