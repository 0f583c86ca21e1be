import type { ServerWebSocket } from 'bun'
import type { Client } from '../registry.ts'
import type { TaskResponse } from '../schemas.ts'
import { type Answer, AttemptError, type Transport } from './types.ts'

/** What the server keeps on each WebSocket connection. */
export interface SocketData {
  remoteAddress: string
  /** Set once the socket registers as an agent. */
  nodeId?: string
  connectionId?: number
  /** The dashboard's live feed instead of an agent. */
  monitor: boolean
  lastSeenMs: number
  /** Tasks sent over this socket and not yet answered: failed over at once if it closes. */
  pending: Set<string>
  topics: readonly string[]
  writeTimer?: ReturnType<typeof setTimeout>
}

export type AgentSocket = ServerWebSocket<SocketData>

interface Waiter {
  socket: AgentSocket
  resolve: (answer: Answer) => void
  reject: (error: AttemptError) => void
}

/** Headers that describe one hop's connection, not the answer; never copied from an agent. */
const HOP_BY_HOP = new Set(['connection', 'content-length', 'keep-alive', 'transfer-encoding', 'upgrade'])

/**
 * Tasks over WebSocket: sends `{"type":"task",...}` to the client's socket and waits for its
 * `task_response`. A socket that closes fails its tasks at once so they are retried elsewhere.
 */
export class WsTransport implements Transport {
  private readonly sockets = new Map<string, AgentSocket>()
  /** task id -> node id -> waiter (one node for a task, many for a broadcast). */
  private readonly waiting = new Map<string, Map<string, Waiter>>()
  /** Tasks waiting for the end of this event-loop turn to go out, per socket. */
  private outbox = new Map<AgentSocket, Array<{ taskId: string; nodeId: string; message: string }>>()
  private flushScheduled = false

  constructor(private readonly writeTimeoutMs: () => number) {}

  /** Binds a node to its socket; returns the socket it replaces, which the caller closes. */
  attach(nodeId: string, socket: AgentSocket): AgentSocket | undefined {
    const previous = this.sockets.get(nodeId)
    this.sockets.set(nodeId, socket)
    return previous === socket ? undefined : previous
  }

  /** Forgets a closed socket and fails everything it still owed. */
  detach(socket: AgentSocket): void {
    const { nodeId } = socket.data
    if (nodeId !== undefined && this.sockets.get(nodeId) === socket) this.sockets.delete(nodeId)
    clearTimeout(socket.data.writeTimer)
    for (const taskId of socket.data.pending) {
      const waiter = nodeId === undefined ? undefined : this.waiting.get(taskId)?.get(nodeId)
      if (waiter?.socket === socket) {
        this.settle(taskId, nodeId!)
        waiter.reject(new AttemptError('disconnected', 'the client disconnected before answering'))
      }
    }
    socket.data.pending.clear()
  }

  socketOf(nodeId: string): AgentSocket | undefined {
    return this.sockets.get(nodeId)
  }

  send(client: Client, taskId: string, payloadJson: string, signal: AbortSignal): Promise<Answer> {
    const socket = this.sockets.get(client.nodeId)
    if (!socket) return Promise.reject(new AttemptError('disconnected', 'the client has no open connection'))
    const answer = this.expect(taskId, client.nodeId, socket, signal)
    let queue = this.outbox.get(socket)
    if (!queue) {
      queue = []
      this.outbox.set(socket, queue)
    }
    queue.push({ taskId, nodeId: client.nodeId, message: taskMessage(taskId, payloadJson) })
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
        for (const { taskId, nodeId, message } of queue) {
          const sent = socket.send(message)
          if (sent === 0) this.fail(taskId, nodeId, new AttemptError('dropped', 'the client\'s send buffer is full'))
          else if (sent === -1) this.watchBackpressure(socket)
        }
      })
    }
  }

  /**
   * Sends one task to many clients through a single `publish` on the region's topic; every
   * subscriber is an eligible client of that region, so `nodeIds` is who will answer.
   */
  broadcast(
    publish: (message: string) => void,
    taskId: string,
    payloadJson: string,
    nodeIds: readonly string[],
    signal: AbortSignal,
  ): Map<string, Promise<Answer>> {
    const answers = new Map<string, Promise<Answer>>()
    for (const nodeId of nodeIds) {
      const socket = this.sockets.get(nodeId)
      answers.set(
        nodeId,
        socket
          ? this.expect(taskId, nodeId, socket, signal)
          : Promise.reject(new AttemptError('disconnected', 'the client has no open connection')),
      )
    }
    publish(taskMessage(taskId, payloadJson))
    return answers
  }

  /** Delivers a client's task_response; false if no task with that id is waiting on this socket. */
  resolve(socket: AgentSocket, response: TaskResponse): boolean {
    const nodeId = socket.data.nodeId
    const waiter = nodeId === undefined ? undefined : this.waiting.get(response.task_id)?.get(nodeId)
    if (!waiter || waiter.socket !== socket) return false
    this.settle(response.task_id, nodeId!)
    waiter.resolve(toAnswer(response))
    return true
  }

  /** Fails the attempt `taskId` this socket owes (it answered with something unusable); false if none is waiting. */
  reject(socket: AgentSocket, taskId: string, message: string): boolean {
    const nodeId = socket.data.nodeId
    const waiter = nodeId === undefined ? undefined : this.waiting.get(taskId)?.get(nodeId)
    if (!waiter || waiter.socket !== socket) return false
    this.fail(taskId, nodeId!, new AttemptError('invalid_answer', message))
    return true
  }

  /** The socket drained its send queue in time. */
  drained(socket: AgentSocket): void {
    clearTimeout(socket.data.writeTimer)
    socket.data.writeTimer = undefined
  }

  /** Points a client's socket at exactly `topics` (empty while it must get no broadcasts). */
  subscribe(nodeId: string, topics: readonly string[]): void {
    const socket = this.sockets.get(nodeId)
    if (!socket) return
    for (const topic of socket.data.topics) if (!topics.includes(topic)) socket.unsubscribe(topic)
    for (const topic of topics) if (!socket.data.topics.includes(topic)) socket.subscribe(topic)
    socket.data.topics = topics
  }

  private expect(taskId: string, nodeId: string, socket: AgentSocket, signal: AbortSignal): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      if (signal.aborted) {
        reject(new AttemptError('timeout', 'timed out waiting for the client'))
        return
      }
      let forNode = this.waiting.get(taskId)
      if (!forNode) {
        forNode = new Map()
        this.waiting.set(taskId, forNode)
      }
      const onAbort = () => this.fail(taskId, nodeId, new AttemptError('timeout', 'timed out waiting for the client'))
      signal.addEventListener('abort', onAbort, { once: true })
      forNode.set(nodeId, {
        socket,
        resolve: (answer) => {
          signal.removeEventListener('abort', onAbort)
          resolve(answer)
        },
        reject: (error) => {
          signal.removeEventListener('abort', onAbort)
          reject(error)
        },
      })
      socket.data.pending.add(taskId)
    })
  }

  private fail(taskId: string, nodeId: string, error: AttemptError): void {
    const waiter = this.waiting.get(taskId)?.get(nodeId)
    if (!waiter) return
    this.settle(taskId, nodeId)
    waiter.reject(error)
  }

  private settle(taskId: string, nodeId: string): void {
    const forNode = this.waiting.get(taskId)
    const waiter = forNode?.get(nodeId)
    if (!forNode || !waiter) return
    forNode.delete(nodeId)
    if (forNode.size === 0) this.waiting.delete(taskId)
    waiter.socket.data.pending.delete(taskId)
  }

  /** A client that does not read its queue within write_timeout is cut off; its tasks fail over. */
  private watchBackpressure(socket: AgentSocket): void {
    if (socket.data.writeTimer) return
    // terminate, not close: a peer that does not read would never read a close frame either.
    socket.data.writeTimer = setTimeout(() => socket.terminate(), this.writeTimeoutMs())
  }
}

function taskMessage(taskId: string, payloadJson: string): string {
  // The payload is spliced in as already-serialized JSON: it is never parsed or stringified again.
  return `{"type":"task","task_id":${JSON.stringify(taskId)},"payload":${payloadJson}}`
}

function toAnswer(response: TaskResponse): Answer {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(response.headers)) {
    const lower = name.toLowerCase()
    if (!HOP_BY_HOP.has(lower)) headers[lower] = value
  }
  // A string with its own content type is a body as-is; anything else is a JSON value.
  if (typeof response.response === 'string' && headers['content-type']) {
    return { status: response.status, headers, body: response.response }
  }
  headers['content-type'] ??= 'application/json'
  return { status: response.status, headers, body: JSON.stringify(response.response ?? null) }
}
