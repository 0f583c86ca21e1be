import { isAscii } from 'node:buffer'
import zlib from 'node:zlib'
import type { Client } from '../fleet/registry.ts'
import type { TraceHeaders } from '../observe/tracing/trace-context.ts'
import type { HeaderPolicy } from '../security/answer-headers.ts'
import { certificateFailure } from '../security/peer-certificate-errors.ts'
import { signatureHeaders } from '../security/signing.ts'
import type { Deadline } from '../tasks/deadlines.ts'
import { NO_RETRY_HEADER } from '../wire/task.ts'
import { type AgentAddress, type AgentPoolFigures, type AnswerSink, agentKey, HttpClientError, HttpClientPool } from './http-client/pool.ts'
import type { ResponseHead } from './http-client/response-parser.ts'
import { type Answer, AttemptError, type Transport, timedOut } from './types.ts'

/** What each call reads from the settings in force, so a reload applies to the next call. */
export interface HttpCallSettings {
  maxAnswerBytes: number
  /** The PEM bundle HTTPS agents are verified against (`agents.ca`); the system's CAs without it. */
  agentCa?: string
  /** Every call is signed with it (`signing_secret`, src/security/signing.ts). */
  signingSecret?: string
  /** Which of an answer's headers reach the caller (answers.pass_headers). */
  headerPolicy: HeaderPolicy
  /** Connections per agent at most (`http_agents.max_connections`). */
  maxConnections: number
  /** An unused connection to an agent is closed after this long (`http_agents.idle_timeout`). */
  idleTimeoutMs: number
}

/**
 * What every call to one agent starts with, made once per agent rather than per task: its address
 * and key in the pool, and the request head up to the task's own lines. Made again when the agent's
 * address or agents.ca changes (a heartbeat from a new address, a reload).
 */
class AgentTarget {
  readonly address: AgentAddress
  readonly key: string
  readonly headStart: string

  constructor(
    { ip, port, scheme }: Client,
    readonly ca: string | undefined,
  ) {
    this.address = { scheme, host: ip, port, ca: scheme === 'https' ? ca : undefined }
    this.key = agentKey(this.address)
    this.headStart = `POST /work HTTP/1.1\r\nhost: ${hostOf(ip, port)}\r\ncontent-type: application/json\r\nx-task-id: `
  }

  matches({ ip, port, scheme }: Client, ca: string | undefined): boolean {
    const { address } = this
    return address.host === ip && address.port === port && address.scheme === scheme && this.ca === ca
  }
}

/** POSTs the payload to the client's `/work` over a pooled keep-alive connection and hands back its status, content type and body. */
export class HttpTransport implements Transport {
  readonly pool: HttpClientPool
  /** Per client record: forgotten with it. */
  private readonly targets = new WeakMap<Client, AgentTarget>()
  /** What each answer head gives the caller, per head: a parser hands the same head again while an agent's answers repeat it. */
  private readonly shapes = new WeakMap<ResponseHead, AnswerShape>()

  constructor(
    private readonly settings: () => HttpCallSettings,
    /** Wall-clock ms, for the signature's timestamp. */
    private readonly now: () => number,
  ) {
    const { maxConnections, idleTimeoutMs } = settings()
    this.pool = new HttpClientPool({ maxConnections, idleTimeoutMs })
  }

  /** Each agent's connections: open, busy, and calls waiting for one. */
  figures(): AgentPoolFigures[] {
    return this.pool.figures()
  }

  close(): void {
    this.pool.close()
  }

  async send(client: Client, taskId: string, payloadJson: string, deadline: Deadline, mayResend = true, trace?: TraceHeaders): Promise<Answer> {
    if (deadline.expired) throw timedOut()
    const { maxAnswerBytes: limit, agentCa, signingSecret, headerPolicy, maxConnections, idleTimeoutMs } = this.settings()
    this.pool.maxConnections = maxConnections
    this.pool.idleTimeoutMs = idleTimeoutMs
    // One string, head and payload, written as it is: no buffers to build per call. The signature is
    // over the payload's UTF-8 bytes, which are the bytes the socket writes.
    let target = this.targets.get(client)
    if (target === undefined || !target.matches(client, agentCa)) {
      target = new AgentTarget(client, agentCa)
      this.targets.set(client, target)
    }
    const payloadBytes = Buffer.byteLength(payloadJson)
    let head = `${target.headStart}${taskId}\r\ncontent-length: ${payloadBytes}\r\n`
    if (signingSecret !== undefined)
      for (const [name, value] of Object.entries(signatureHeaders(signingSecret, payloadJson, this.now() / 1000))) head += `${name}: ${value}\r\n`
    if (trace !== undefined) head += traceLines(trace)
    const request = `${head}\r\n${payloadJson}`
    const answer = new AnswerReader(limit)
    // Every line of the head is ASCII (the address, task id, signature and trace values are checked where they come
    // from), a byte a character: the request's length is counted without scanning the payload a second time.
    const pending = this.pool.request(target.address, request, answer, mayResend, target.key, head.length + 2 + payloadBytes)
    // Redirects are never followed: a 3xx is the agent's answer, passed back as such (its Location is not on the allow-list).
    deadline.watch(pending)
    try {
      await pending.done
    } catch (error) {
      throw attemptFailure(error, client, answer.received !== undefined, limit)
    } finally {
      deadline.unwatch(pending)
    }
    const received = answer.received!
    const { status } = received
    const bodyBytes = answer.decoded()
    // With signing on, 401 is the agent refusing the call, not its answer to the payload: the task did not run, so another client may run it.
    if (signingSecret !== undefined && status === 401) throw refusedSignature(bodyBytes)
    let shape = this.shapes.get(received)
    if (shape === undefined || shape.policy !== headerPolicy) {
      shape = new AnswerShape(received, headerPolicy)
      this.shapes.set(received, shape)
    }
    const result: Answer = { status, headers: shape.headers, body: bodyBytes, sharedHeaders: true }
    if (status >= 500 && shape.noRetry) result.retry = false
    return result
  }
}

/**
 * What an answer head gives the caller, made once per head (and header policy): the headers that pass,
 * one record shared by every answer with that head, and whether a 5xx says not to retry it.
 */
class AnswerShape {
  readonly headers: Record<string, string>
  readonly noRetry: boolean

  constructor(
    { headers }: ResponseHead,
    readonly policy: HeaderPolicy,
  ) {
    this.headers = policy.filterLines(headers)
    // The agent's word to the server, not to the caller: the policy never passes X-Moonlight-* headers on.
    this.noRetry = joinedHeader(headers, NO_RETRY_HEADER)?.trim().toLowerCase() === 'false'
  }
}

/** Content codings an agent may send unasked, and how each is undone with the output held to a size. */
const DECODERS: Record<string, (bytes: Uint8Array, options: zlib.ZlibOptions) => Buffer> = {
  gzip: zlib.gunzipSync,
  'x-gzip': zlib.gunzipSync,
  deflate: zlib.inflateSync,
  br: zlib.brotliDecompressSync as (bytes: Uint8Array, options: zlib.ZlibOptions) => Buffer,
}

/** Node's Buffer#latin1Slice (Bun has it, its types do not): a byte a character, on any Uint8Array. */
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, start: number, end: number): string }).latin1Slice

/** Body pieces after the first are copied into blocks of this size, not kept one buffer each. */
const BODY_BLOCK_BYTES = 64 * 1024

/**
 * Takes one answer from the pool: the head, then the body pieces, held to `max_answer_bytes`. A
 * compressed body is held to the limit by its unpacked size, so a small gzip bomb cannot pass it.
 */
class AnswerReader implements AnswerSink {
  received: ResponseHead | undefined = undefined
  /**
   * The first piece as text, when it is all ASCII, not packed and typed (nearly every JSON answer): the
   * copy the socket's buffer needs anyway, and a string costs the caller's Response less than bytes
   * (measured ~0.7 µs per answer). An ASCII string is written out as the very same bytes.
   */
  private text: string | undefined = undefined
  /** Whether the first piece may be kept as text: the answer names its Content-Type and is not packed (see head). */
  private textOk = false
  private chunks: Uint8Array<ArrayBuffer>[] = []
  /** The block later small pieces are copied into, and how much of it they fill. */
  private block: Uint8Array<ArrayBuffer> | undefined = undefined
  private blockUsed = 0
  private encoding: string | undefined = undefined

  constructor(private readonly limit: number) {}

  head(head: ResponseHead): number {
    this.received = head
    // Every Content-Encoding line is one list (RFC 9110 §5.3), in the order applied: two lines of gzip are a body packed
    // twice, which is refused below, not unpacked once and passed on still packed.
    // Made only for an answer that has the header: nearly none do.
    let codings: string[] | undefined
    let typed = false
    for (const [name, value] of head.headers) {
      if (name === 'content-type') typed = true
      if (name !== 'content-encoding') continue
      codings ??= []
      for (const coding of value.toLowerCase().split(',')) if (coding.trim() !== '' && coding.trim() !== 'identity') codings.push(coding.trim())
    }
    this.encoding = codings === undefined || codings.length === 0 ? undefined : codings.join(', ')
    if (this.encoding !== undefined && !(this.encoding in DECODERS))
      throw new AttemptError('invalid_answer', `answered in a content encoding the server cannot unpack (${this.encoding.slice(0, 40)})`)
    // Untyped, the caller's Response would type a string text/plain and bytes application/octet-stream:
    // the type must not hang on whether the bytes happen to be ASCII, so such a body stays bytes.
    this.textOk = typed && this.encoding === undefined
    // Packed, the wire bytes may be fewer than the unpacked ones but hardly more: a stream several
    // times the limit is refused before it is unpacked at all.
    return this.encoding === undefined ? this.limit : 4 * this.limit + 64 * 1024
  }

  body(chunk: Uint8Array): void {
    // Copied: the socket's buffer is not ours past this call. A chunked answer may come in millions of
    // 1-byte chunks; a buffer each would cost the server a hundred times max_answer_bytes in memory.
    if (this.block !== undefined && this.blockUsed + chunk.length <= this.block.length) {
      this.block.set(chunk, this.blockUsed)
      this.blockUsed += chunk.length
      return
    }
    this.closeBlock()
    if (this.text !== undefined) {
      // A later piece: the body goes on as bytes after all (rare: most answers come in one piece).
      this.chunks.push(Buffer.from(this.text, 'latin1'))
      this.text = undefined
    } else if (this.chunks.length === 0 && this.textOk && chunk.length < BODY_BLOCK_BYTES && isAscii(chunk)) {
      this.text = latin1Slice.call(chunk, 0, chunk.length)
      return
    }
    if (this.chunks.length === 0 || chunk.length >= BODY_BLOCK_BYTES) {
      // The first piece (most answers' only one) and large ones: copied as they are (Uint8Array's slice, not Buffer's view).
      this.chunks.push(Uint8Array.prototype.slice.call(chunk))
      return
    }
    this.block = new Uint8Array(BODY_BLOCK_BYTES)
    this.block.set(chunk)
    this.blockUsed = chunk.length
  }

  end(): void {}

  private closeBlock(): void {
    if (this.block !== undefined) this.chunks.push(this.block.subarray(0, this.blockUsed))
    this.block = undefined
  }

  /** The body as the caller gets it: unpacked if the agent packed it, at most `limit` bytes. */
  decoded(): string | Uint8Array<ArrayBuffer> {
    if (this.text !== undefined) return this.text
    this.closeBlock()
    // One piece is a whole array of its own (only a block is a part of one): handed on as it is, its
    // ArrayBuffer never asked for (JavaScriptCore makes one for a typed array only when asked, at a cost per answer).
    const packed = this.chunks.length === 1 ? this.chunks[0]! : Bun.concatArrayBuffers(this.chunks, Number.POSITIVE_INFINITY, true)
    // No body (a 204, a zero length) has nothing to unpack, whatever Content-Encoding says: unpacking nothing fails.
    if (this.encoding === undefined || packed.byteLength === 0) return packed
    const decode = DECODERS[this.encoding]!
    try {
      return decode(packed, { maxOutputLength: this.limit }) as Uint8Array<ArrayBuffer>
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(this.limit)
      throw new AttemptError('invalid_answer', `its ${this.encoding} answer does not unpack: ${(error as Error).message}`)
    }
  }
}

/** W3C trace context as header lines (values checked when read: visible ASCII only, no line breaks). */
function traceLines(trace: TraceHeaders): string {
  return trace.tracestate === undefined ? `traceparent: ${trace.traceparent}\r\n` : `traceparent: ${trace.traceparent}\r\ntracestate: ${trace.tracestate}\r\n`
}

function hostOf(ip: string, port: number): string {
  const host = ip.includes(':') && !ip.startsWith('[') ? `[${ip}]` : ip
  return `${host}:${port}`
}

/** One header's lines joined as one, as fetch's Headers did; undefined without any. */
function joinedHeader(headers: ReadonlyArray<[string, string]>, wanted: string): string | undefined {
  let joined: string | undefined
  for (const [name, value] of headers) if (name === wanted) joined = joined === undefined ? value : `${joined}, ${value}`
  return joined
}

/** What a failed call means for the task: the kinds the dispatcher retries on, or not. */
function attemptFailure(error: unknown, client: Client, answerStarted: boolean, limit: number): AttemptError {
  if (error instanceof AttemptError) return error
  if (!(error instanceof HttpClientError)) return new AttemptError('disconnected', `connection lost before the answer: ${(error as Error).message}`)
  switch (error.code) {
    case 'timeout':
      return answerStarted ? new AttemptError('timeout', "timed out reading the client's answer") : timedOut()
    case 'body_too_large':
      return tooLarge(limit)
    case 'header_too_large':
    case 'malformed':
      return new AttemptError('invalid_answer', `sent no valid HTTP answer: ${error.message}`)
    case 'tls':
      return new AttemptError('unreachable', `cannot reach ${client.ip}:${client.port}: ${describeTlsFailure(error)}`)
    case 'connect':
      return new AttemptError('unreachable', `cannot reach ${client.ip}:${client.port}: ${error.message}`)
    case 'closed':
      // Once any of the task was written the agent may have read it and be running it: lost, not unreachable.
      if (answerStarted) return new AttemptError('disconnected', `connection lost before the answer: ${error.message}`)
      return error.requestWritten
        ? new AttemptError('disconnected', `connection lost after the task was sent: ${error.message}`)
        : new AttemptError('unreachable', `cannot reach ${client.ip}:${client.port}: ${error.message}`)
  }
}

function describeTlsFailure(error: HttpClientError): string {
  const certificate = certificateFailure(error.cause)
  // Said plainly: a private CA's agent is reachable, and only agents.ca is missing.
  return certificate ? `TLS verification failed, ${certificate}; set agents.ca if the agent's certificate comes from a private CA` : error.message
}

const REFUSAL_EXCERPT_CHARS = 200

function refusedSignature(body: string | Uint8Array<ArrayBuffer>): AttemptError {
  const text = (typeof body === 'string' ? body : new TextDecoder().decode(body.slice(0, REFUSAL_EXCERPT_CHARS * 4))).slice(0, REFUSAL_EXCERPT_CHARS)
  return new AttemptError('refused', `answered 401: the agent refused the signed call${text ? ` (${text.replace(/\s+/g, ' ').trim()})` : ''}`)
}

function tooLarge(limit: number): AttemptError {
  return new AttemptError('too_large', `answered more than max_answer_bytes (${limit} bytes)`)
}
