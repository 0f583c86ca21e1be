import type { Socket, SocketHandler } from 'bun'
import type { Expirable } from '../../tasks/deadlines.ts'
import { DEFAULT_MAX_HEADER_BYTES, ParseError, type ResponseHead, ResponseParser } from './response-parser.ts'

/**
 * Keep-alive HTTP/1.1 connections to agents over `Bun.connect`, pooled per agent: every call to an
 * HTTP agent goes through here instead of `fetch`, which cost several times the CPU per call and
 * queued every agent's calls behind one process-wide limit. Each agent has its own bound, so a slow
 * agent holds up only its own tasks.
 */

/** Where an agent listens. `ca` is the PEM bundle an `https` agent is verified against (the system's CAs without it). */
export interface AgentAddress {
  scheme: 'http' | 'https'
  host: string
  port: number
  ca?: string | undefined
}

/** The pool's key for an agent: a caller that sends to it often may make it once and pass it to request(). */
export function agentKey(address: AgentAddress): string {
  return `${address.scheme}://${address.host}:${address.port}`
}

export interface PoolOptions {
  /** Connections per agent at most; requests past it wait in order. */
  maxConnections: number
  /** An unused connection is closed after this long (sooner if the agent's Keep-Alive: timeout says so). */
  idleTimeoutMs: number
  maxHeaderBytes?: number
}

/** Receives one answer as it comes. `head` returns the most body bytes to take; any of them may throw to refuse the answer. */
export interface AnswerSink {
  head(head: ResponseHead): number
  body(chunk: Uint8Array): void
  end(): void
}

export type ClientErrorCode = 'connect' | 'tls' | 'closed' | 'malformed' | 'header_too_large' | 'body_too_large' | 'timeout'

export class HttpClientError extends Error {
  override name = 'HttpClientError'
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    /** The TLS verification failure behind a `tls` error, with its OpenSSL `code`. */
    override readonly cause?: unknown,
    /** A `closed` error after some of the request was written: the agent may have read it, and run it. */
    readonly requestWritten = false,
  ) {
    super(message)
  }
}

/** One agent's figures: connections open (connecting ones included), those carrying a request, requests waiting for one. */
export interface AgentPoolFigures {
  agent: string
  open: number
  busy: number
  queued: number
}

/** One request in flight: watch it with a task's deadline (it is Expirable), await `done`. */
export class PendingRequest implements Expirable {
  readonly done: Promise<void>
  resolve!: () => void
  reject!: (error: unknown) => void
  connection: Connection | undefined = undefined
  /** Sent once more already, after a reused connection died before answering. */
  resent = false
  /** Whether any of its bytes went to a socket: from then on the agent may have read it. */
  written = false
  settled = false

  /** The request's length on the wire (a string is written as UTF-8). */
  readonly byteLength: number

  constructor(
    readonly agent: AgentPool,
    /** The whole request; a string is written as it is, without first being copied into a buffer. */
    readonly bytes: string | Uint8Array,
    readonly sink: AnswerSink,
    /** false: never sent a second time, not even by the stale-socket rule (a task that must run at most once). */
    readonly mayResend = true,
    /** The caller's count of the bytes, when it has one: a string is then not scanned for its UTF-8 length again. */
    byteLength?: number,
  ) {
    this.byteLength = byteLength ?? (typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length)
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
  }

  /** The deadline passed: the request stops, and its connection is destroyed, never pooled again. */
  expire(): void {
    this.fail(new HttpClientError('timeout', 'timed out waiting for the answer'))
  }

  fail(error: unknown): void {
    if (this.settled) return
    this.settled = true
    const { connection } = this
    this.connection = undefined
    if (connection) {
      connection.current = undefined
      connection.destroy()
    } else this.agent.dequeue(this)
    this.reject(error)
  }

  succeed(): void {
    if (this.settled) return
    this.settled = true
    this.connection = undefined
    this.resolve()
  }
}

class Connection {
  socket: Socket<Connection> | undefined = undefined
  current: PendingRequest | undefined = undefined
  /** Whether it has carried an answer already: a request failing on it then may have met a stale socket. */
  reused = false
  closed = false
  keepAlive = true
  answered = false
  idleUntilMs = 0
  keepAliveMs: number
  unwritten: Uint8Array | undefined = undefined
  tlsFailure: Error | undefined = undefined
  readonly parser: ResponseParser

  constructor(readonly agent: AgentPool) {
    this.keepAliveMs = agent.pool.idleTimeoutMs
    this.parser = new ResponseParser(
      {
        head: (head) => {
          // A head after this request's answer ended (a second answer in the same packet) was never asked for: given to the
          // request's sink, it would replace the answer's status and add its body to the first one's, past max_answer_bytes.
          const request = this.asked()
          this.keepAlive = head.keepAlive
          if (head.keepAliveTimeoutS !== undefined) {
            // Closed a second before the agent would (half the time, for a timeout of under two seconds), so that it
            // does not close a socket just handed out; never at once, or every task would open a connection.
            const marginS = Math.min(1, head.keepAliveTimeoutS / 2)
            this.keepAliveMs = Math.min(agent.pool.idleTimeoutMs, (head.keepAliveTimeoutS - marginS) * 1000)
          }
          this.parser.limits.maxBodyBytes = request.sink.head(head)
        },
        // An interim answer after the answer ended belongs to no request either: the connection is not reused (onData).
        interim: () => void this.asked(),
        body: (chunk) => this.current?.sink.body(chunk),
        end: () => {
          this.answered = true
          this.current?.sink.end()
        },
      },
      { maxHeaderBytes: agent.pool.maxHeaderBytes, maxBodyBytes: Number.POSITIVE_INFINITY },
    )
  }

  /** The request an answer's head belongs to; throws if none is waiting for one (bytes nobody asked for). */
  private asked(): PendingRequest {
    if (!this.current || this.answered) throw new ParseError('malformed', 'an answer nobody asked for')
    return this.current
  }

  send(request: PendingRequest): void {
    this.current = request
    request.connection = this
    this.answered = false
    this.keepAlive = true
    this.parser.limits.maxBodyBytes = Number.POSITIVE_INFINITY
    if (this.socket) this.write(request.bytes, request.byteLength)
  }

  write(bytes: string | Uint8Array, byteLength: number): void {
    const written = this.socket!.write(bytes)
    if (written > 0 && this.current) this.current.written = true
    // What the kernel did not take waits for drain; only then is a string turned into bytes.
    this.unwritten = written < byteLength ? (typeof bytes === 'string' ? Buffer.from(bytes) : bytes).subarray(Math.max(0, written)) : undefined
  }

  destroy(): void {
    if (this.closed) return
    this.socket?.terminate()
    // A socket still connecting is dropped once it opens; its place in the bound is freed now.
    this.onClosed(undefined)
  }

  onData(data: Buffer): void {
    const request = this.current
    if (!request) {
      // Bytes on an idle connection were never asked for. Even a piece too short to refuse yet (a late answer's head)
      // would be kept by the parser and end up as the next request's answer: the connection is dropped at once.
      this.destroy()
      return
    }
    let failure: unknown
    try {
      this.parser.feed(data)
    } catch (error) {
      failure = error
    }
    if (this.answered) {
      // The answer came whole before any bad bytes: it stands, whatever followed it.
      this.reused = true
      this.current = undefined
      request.succeed()
      // Bytes past the answer were never asked for: such a connection is not trusted with another request. Nor is one the
      // agent answered before taking the whole request: the next request's bytes, written before (or instead of) the
      // rest, would be read by the agent as this one's body.
      if (failure === undefined && this.keepAlive && this.parser.idle && this.unwritten === undefined) this.agent.release(this)
      else this.destroy()
      return
    }
    if (failure === undefined) return
    if (!request.settled) request.fail(translate(failure, request.written))
    else this.destroy()
  }

  onClosed(error: Error | undefined): void {
    if (this.closed) return
    this.closed = true
    const request = this.current
    this.current = undefined
    if (!request || request.settled) {
      this.agent.forget(this)
      return
    }
    request.connection = undefined
    // The stale-socket rule: the agent closed a pooled socket as the request went out, and no byte of an
    // answer came, so the agent cannot have seen it. Once more on a fresh connection, in this one's place; never twice.
    if (this.reused && !this.parser.started && !request.resent && request.mayResend) {
      request.resent = true
      this.agent.forget(this, request)
      return
    }
    this.agent.forget(this)
    try {
      this.parser.close()
    } catch (parseError) {
      request.fail(translate(parseError, request.written))
      return
    }
    if (this.answered) request.succeed()
    else if (this.tlsFailure) request.fail(new HttpClientError('tls', `TLS verification failed: ${this.tlsFailure.message}`, this.tlsFailure))
    else
      request.fail(
        new HttpClientError('closed', `the agent closed the connection before answering${error ? ` (${error.message})` : ''}`, undefined, request.written),
      )
  }
}

/** A parser's refusal as the client's error; a close mid-answer came after `requestWritten` bytes of the request went out, so the agent may have run it. */
function translate(error: unknown, requestWritten: boolean): unknown {
  if (error instanceof ParseError) {
    if (error.code !== 'incomplete') return new HttpClientError(error.code, error.message)
    return new HttpClientError('closed', `the agent closed the connection mid-answer: ${error.message}`, undefined, requestWritten)
  }
  return error
}

const HANDLERS: SocketHandler<Connection> = {
  open(socket) {
    const connection = socket.data
    if (connection.closed) {
      socket.terminate()
      return
    }
    connection.socket = socket
    if (connection.current) connection.write(connection.current.bytes, connection.current.byteLength)
  },
  handshake(socket, success, authorizationError) {
    if (success) return
    socket.data.tlsFailure = authorizationError ?? new Error('the handshake was refused')
    socket.terminate()
  },
  data(socket, data) {
    socket.data.onData(data)
  },
  drain(socket) {
    const connection = socket.data
    if (connection.unwritten) connection.write(connection.unwritten, connection.unwritten.length)
  },
  close(socket, error) {
    socket.data.onClosed(error)
  },
  connectError(socket, error) {
    const connection = socket.data
    if (connection.closed) return
    const request = connection.current
    connection.current = undefined
    connection.closed = true
    connection.agent.forget(connection)
    if (request) {
      request.connection = undefined
      const failure = connection.tlsFailure ?? error
      request.fail(
        connection.tlsFailure
          ? new HttpClientError('tls', `TLS verification failed: ${failure.message}`, failure)
          : new HttpClientError('connect', `cannot connect: ${error.message}`, error),
      )
    }
  },
  error(socket, error) {
    socket.data.onClosed(error)
  },
}

/** The connections to one agent and the requests waiting for one. */
class AgentPool {
  readonly idle: Connection[] = []
  readonly queue: PendingRequest[] = []
  open = 0
  busy = 0
  ca: string | undefined
  /** submit is closing an expired idle connection: the pool is about to be used, not dropped. */
  private retiring = false

  constructor(
    readonly pool: HttpClientPool,
    readonly key: string,
    readonly address: AgentAddress,
  ) {
    this.ca = address.ca
  }

  submit(request: PendingRequest): void {
    // Past the end the agent's Keep-Alive gave it (the sweep runs up to a second late): the agent may be
    // closing it as the request goes out. Closed here, not handed out (the most recent is last).
    if (this.idle.length > 0 && this.idle.at(-1)!.idleUntilMs <= performance.now()) {
      // The pool stays while they close, though it may have none left: this request is about to open one.
      this.retiring = true
      this.sweep(performance.now())
      this.retiring = false
    }
    const connection = this.idle.pop()
    if (connection) {
      this.busy++
      connection.send(request)
    } else if (this.open < this.pool.maxConnections) this.sendFresh(request)
    else this.queue.push(request)
  }

  sendFresh(request: PendingRequest): void {
    const connection = new Connection(this)
    this.open++
    this.busy++
    connection.send(request)
    const { scheme, host, port } = this.address
    Bun.connect<Connection>({
      hostname: host,
      port,
      data: connection,
      socket: HANDLERS,
      ...(scheme === 'https' ? { tls: this.ca === undefined ? true : { ca: this.ca } } : {}),
    }).catch(() => {
      // Reported through connectError.
    })
  }

  /** A connection is free again: it takes the next waiting request, or waits for one. */
  release(connection: Connection): void {
    const next = this.queue.shift()
    if (next) {
      connection.send(next)
      return
    }
    this.busy--
    connection.idleUntilMs = performance.now() + connection.keepAliveMs
    this.idle.push(connection)
    this.pool.watchIdle()
  }

  dequeue(request: PendingRequest): void {
    const index = this.queue.indexOf(request)
    if (index !== -1) this.queue.splice(index, 1)
    if (this.open === 0) this.pool.drop(this)
  }

  /** A connection closed; its place goes to `resend` (the stale-socket rule) or the next waiting request. */
  forget(connection: Connection, resend?: PendingRequest): void {
    const index = this.idle.indexOf(connection)
    if (index !== -1) this.idle.splice(index, 1)
    else this.busy--
    this.open--
    const next = resend ?? this.queue.shift()
    if (next) this.sendFresh(next)
    else if (this.open === 0 && !this.retiring) this.pool.drop(this)
  }

  /** Closes the connections idle past their time; the rest stay (most recently used last). */
  sweep(nowMs: number): void {
    for (const connection of this.idle.filter((idle) => idle.idleUntilMs <= nowMs)) connection.destroy()
  }
}

/** Every agent's pool. One for the server's life; `close` ends every connection. */
export class HttpClientPool {
  maxConnections: number
  idleTimeoutMs: number
  readonly maxHeaderBytes: number
  private readonly agents = new Map<string, AgentPool>()
  private sweeper: ReturnType<typeof setInterval> | undefined = undefined

  constructor(options: PoolOptions) {
    this.maxConnections = options.maxConnections
    this.idleTimeoutMs = options.idleTimeoutMs
    this.maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES
  }

  /** Sends `bytes` (a whole request, `byteLength` bytes on the wire if the caller knows) to the agent; the answer goes to `sink`. */
  request(address: AgentAddress, bytes: string | Uint8Array, sink: AnswerSink, mayResend = true, key = agentKey(address), byteLength?: number): PendingRequest {
    let agent = this.agents.get(key)
    if (!agent) {
      agent = new AgentPool(this, key, address)
      this.agents.set(key, agent)
    } else if (agent.ca !== address.ca) {
      // agents.ca changed on a reload: connections verified against the old bundle are not reused.
      agent.ca = address.ca
      for (const connection of [...agent.idle]) connection.destroy()
    }
    const request = new PendingRequest(agent, bytes, sink, mayResend, byteLength)
    agent.submit(request)
    return request
  }

  figures(): AgentPoolFigures[] {
    return [...this.agents.values()].map((agent) => ({ agent: agent.key, open: agent.open, busy: agent.busy, queued: agent.queue.length }))
  }

  /** Ends every connection; requests under way fail. */
  close(): void {
    for (const agent of [...this.agents.values()]) {
      for (const request of agent.queue.splice(0)) request.fail(new HttpClientError('closed', 'the client pool closed'))
      for (const connection of [...agent.idle]) connection.destroy()
    }
    if (this.sweeper) clearInterval(this.sweeper)
    this.sweeper = undefined
  }

  drop(agent: AgentPool): void {
    if (this.agents.get(agent.key) === agent && agent.open === 0 && agent.queue.length === 0) this.agents.delete(agent.key)
  }

  /** One timer for every idle connection, running only while there are some, instead of a timer per release. */
  watchIdle(): void {
    if (this.sweeper) return
    const periodMs = Math.min(1000, Math.max(20, this.idleTimeoutMs / 4))
    this.sweeper = setInterval(() => {
      const nowMs = performance.now()
      let idle = 0
      for (const agent of [...this.agents.values()]) {
        agent.sweep(nowMs)
        idle += agent.idle.length
      }
      if (idle === 0) {
        clearInterval(this.sweeper)
        this.sweeper = undefined
      }
    }, periodMs)
    this.sweeper.unref?.()
  }
}
