/**
 * An incremental HTTP/1.1 answer parser: fed the bytes of a connection as they arrive, in pieces of
 * any size, it reports each answer's head, its body in pieces and its end. Pure: no sockets, no
 * timers. The server only POSTs, so every final answer but 204 and 304 may carry a body.
 */

/**
 * An answer's status line and headers. Header names are lower-cased; repeated headers keep their order.
 * Read-only: a parser hands the same head again for an answer whose head text is the same as the last one's.
 */
export interface ResponseHead {
  status: number
  reason: string
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minorVersion: number
  headers: Array<[string, string]>
  /** Whether the connection may carry another request once this answer ends. */
  keepAlive: boolean
  /** The agent's `Keep-Alive: timeout=N`, in seconds, when it sent one. */
  keepAliveTimeoutS: number | undefined
}

export interface ParserEvents {
  /** A final answer's head (interim 1xx answers are skipped). */
  head(head: ResponseHead): void
  /** An interim (1xx) head was skipped: after the answer ended, it is bytes nobody asked for (the caller may throw). */
  interim?(): void
  /** A piece of the body, framing removed. A view of the fed bytes: copy it to keep it past the call. */
  body(chunk: Uint8Array): void
  /** The answer ended; further bytes start the next one. */
  end(): void
}

export type ParseErrorCode = 'header_too_large' | 'body_too_large' | 'malformed' | 'incomplete'

export class ParseError extends Error {
  override name = 'ParseError'
  constructor(
    readonly code: ParseErrorCode,
    message: string,
  ) {
    super(message)
  }
}

export interface ParserLimits {
  /** The most bytes of a status line and headers (and of a chunked body's trailers) together. */
  maxHeaderBytes: number
  /** The most body bytes (as framed on the wire, before any content-encoding is undone). */
  maxBodyBytes: number
}

export const DEFAULT_MAX_HEADER_BYTES = 64 * 1024

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-data-end' | 'trailers' | 'until-close' | 'failed'

const CRLF = Buffer.from('\r\n')
const HEAD_END = Buffer.from('\r\n\r\n')
/** The status is 100 to 999: one under 100 is no status at all, and would otherwise pass for an interim answer. */
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d{2})(?: (.*))?$/
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/**
 * A control character other than HTAB (NUL, DEL, ESC…), or a CR or LF that is not part of a CRLF,
 * anywhere in a head. Such a field value is invalid (RFC 9110 §5.5): passed on, it would make the
 * caller's answer fail to build or fail to parse at the caller (fetch, undici refuse it), as a
 * WebSocket agent's header of that kind is refused; and an agent that ends lines with a bare LF sees
 * other headers (a Content-Length, say) than those read here.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this looks for.
const BAD_HEAD_BYTES = /[\0-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/
/** A Connection header's list holds this token (any case, between commas and the blanks trim() drops): tested where it is, not split into an array. */
const CLOSE_TOKEN = /(?:^|,)\s*close\s*(?:,|$)/i
const KEEP_ALIVE_TOKEN = /(?:^|,)\s*keep-alive\s*(?:,|$)/i
/** A chunk-size line: hex digits, then optional extensions (ignored, RFC 9112 §7.1.1). */
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?$/
/** A chunk-size line is short; one longer than this is no chunked body. */
const MAX_CHUNK_LINE_BYTES = 4096

export class ResponseParser {
  /** Bytes of the head, chunk-size line or trailers kept from earlier pieces until their end arrives. */
  private pending: Buffer | undefined = undefined
  private state: State = 'head'
  /** Body bytes still due: of the declared length, or of the current chunk. */
  private remaining = 0
  private bodyBytes = 0
  private trailerBytes = 0
  /** Whether any byte of the current answer (interim ones included) has arrived. */
  started = false
  /**
   * The last final answer's head bytes (to its blank line), what they parsed to and the framing. An
   * agent's answers mostly repeat their head byte for byte (only Date moves, once a second): such a
   * head is compared, not searched, decoded and parsed again (regular expressions, a string and an array
   * per header line), which was most of reading an answer. The same ResponseHead is handed on again.
   */
  private lastHeadBytes: Buffer | undefined = undefined
  private lastHead: ResponseHead | undefined = undefined
  private lastFraming: Framing = 'none'

  constructor(
    private readonly events: ParserEvents,
    readonly limits: ParserLimits,
  ) {}

  /** Whether the parser sits between answers, with nothing of the next one buffered. */
  get idle(): boolean {
    return this.state === 'head' && this.pending === undefined
  }

  /** Feeds the next bytes of the connection; throws a ParseError, after which the connection is unusable. */
  feed(bytes: Uint8Array): void {
    if (this.state === 'failed') throw new ParseError('malformed', 'the answer is unusable after an earlier error')
    let data = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    if (data.length > 0) this.started = true
    try {
      let offset = 0
      while (offset < data.length) {
        switch (this.state) {
          case 'head': {
            const last = this.lastHeadBytes
            if (
              this.pending === undefined &&
              last !== undefined &&
              data.length - offset >= last.length &&
              data.compare(last, 0, last.length, offset, offset + last.length) === 0
            ) {
              // The last head again, its blank line included: nothing to find, decode or parse.
              offset += last.length
              this.startBody(this.lastHead!, this.lastFraming)
              break
            }
            const from = this.pending ? this.pending.length : 0
            if (this.pending) {
              data = Buffer.concat([this.pending, data.subarray(offset)])
              offset = 0
              this.pending = undefined
            }
            const end = data.indexOf(HEAD_END, Math.max(offset, from - 3))
            if (end === -1) {
              if (data.length - offset > this.limits.maxHeaderBytes) throw this.headTooLarge()
              this.pending = Buffer.from(data.subarray(offset))
              return
            }
            if (end + 4 - offset > this.limits.maxHeaderBytes) throw this.headTooLarge()
            this.startNewBody(data, offset, end + 4)
            offset = end + 4
            break
          }
          case 'length': {
            const take = Math.min(this.remaining, data.length - offset)
            this.emitBody(data.subarray(offset, offset + take))
            offset += take
            this.remaining -= take
            if (this.remaining === 0) this.finish()
            break
          }
          case 'chunk-size':
          case 'chunk-data-end':
          case 'trailers': {
            const line = this.takeLine(data, offset)
            if (line === undefined) return
            offset = line.next
            this.onLine(line.text)
            break
          }
          case 'chunk-data': {
            const take = Math.min(this.remaining, data.length - offset)
            this.emitBody(data.subarray(offset, offset + take))
            offset += take
            this.remaining -= take
            if (this.remaining === 0) this.state = 'chunk-data-end'
            break
          }
          case 'until-close':
            this.emitBody(data.subarray(offset))
            offset = data.length
            break
        }
      }
    } catch (error) {
      this.state = 'failed'
      this.pending = undefined
      throw error
    }
  }

  /** The connection closed: ends a body delimited by the close; throws if an answer was cut short. */
  close(): void {
    if (this.state === 'until-close') {
      this.finish()
      return
    }
    if (this.state === 'failed' || this.idle) return
    const inHead = this.state === 'head'
    this.state = 'failed'
    throw new ParseError(
      'incomplete',
      inHead ? 'the connection closed in the middle of the answer head' : 'the connection closed in the middle of the answer body',
    )
  }

  /** A head not seen last time: `data` from `start` to `end`, its blank line included. */
  private startNewBody(data: Buffer, start: number, end: number): void {
    const head = parseHead(data.toString('latin1', start, end - 4))
    // Interim answers (100 Continue, 103 Early Hints…) precede the real one; 101 would switch protocols, which was never asked.
    if (head.status < 200) {
      if (head.status === 101) throw new ParseError('malformed', 'the agent switched protocols (101) unasked')
      this.events.interim?.()
      return
    }
    const framing = bodyFraming(head)
    if (framing === 'close') head.keepAlive = false
    // Copied: the socket's buffer is not ours past this call.
    this.lastHeadBytes = Buffer.from(data.subarray(start, end))
    this.lastHead = head
    this.lastFraming = framing
    this.startBody(head, framing)
  }

  private startBody(head: ResponseHead, framing: Framing): void {
    this.bodyBytes = 0
    this.events.head(head)
    if (framing === 'none') this.finish()
    else if (framing === 'chunked') {
      this.state = 'chunk-size'
      this.trailerBytes = 0
    } else if (framing === 'close') this.state = 'until-close'
    else {
      if (framing > this.limits.maxBodyBytes) throw bodyTooLarge(this.limits.maxBodyBytes)
      this.remaining = framing
      this.state = 'length'
      if (framing === 0) this.finish()
    }
  }

  private onLine(text: string): void {
    if (this.state === 'chunk-data-end') {
      if (text !== '') throw new ParseError('malformed', 'a chunk is longer than its declared size')
      this.state = 'chunk-size'
    } else if (this.state === 'chunk-size') {
      const match = CHUNK_SIZE.exec(text)
      if (!match) throw new ParseError('malformed', `bad chunk size line "${text.slice(0, 40)}"`)
      const size = Number.parseInt(match[1]!, 16)
      if (size === 0) this.state = 'trailers'
      else {
        if (this.bodyBytes + size > this.limits.maxBodyBytes) throw bodyTooLarge(this.limits.maxBodyBytes)
        this.remaining = size
        this.state = 'chunk-data'
      }
    } else {
      // Trailers are read and dropped: nothing the server passes on comes from them.
      this.trailerBytes += text.length + 2
      if (this.trailerBytes > this.limits.maxHeaderBytes)
        throw new ParseError('header_too_large', `the answer's trailers are over ${this.limits.maxHeaderBytes} bytes`)
      if (text === '') this.finish()
    }
  }

  /** The next CRLF-ended line from `offset`, joined to what earlier pieces left; undefined if its end has not come. */
  private takeLine(data: Buffer, offset: number): { text: string; next: number } | undefined {
    let source = data
    let start = offset
    let searchFrom = offset
    if (this.pending) {
      // A CR at the end of the kept bytes may meet its LF at the start of these.
      searchFrom = this.pending.length - 1
      source = Buffer.concat([this.pending, data.subarray(offset)])
      start = 0
      this.pending = undefined
    }
    const end = source.indexOf(CRLF, searchFrom)
    const limit = this.state === 'trailers' ? this.limits.maxHeaderBytes : MAX_CHUNK_LINE_BYTES
    if (end === -1) {
      if (source.length - start > limit) throw this.lineTooLong()
      this.pending = Buffer.from(source.subarray(start))
      return undefined
    }
    if (end - start > limit) throw this.lineTooLong()
    // Where the line ends in `data`: in the joined bytes, `data[offset]` sits just after the kept ones.
    const next = source === data ? end + 2 : offset + end + 2 - (source.length - (data.length - offset))
    return { text: source.toString('latin1', start, end), next }
  }

  private headTooLarge(): ParseError {
    return new ParseError('header_too_large', `the answer's status line and headers are over ${this.limits.maxHeaderBytes} bytes`)
  }

  private lineTooLong(): ParseError {
    return this.state === 'trailers'
      ? new ParseError('header_too_large', `the answer's trailers are over ${this.limits.maxHeaderBytes} bytes`)
      : new ParseError('malformed', 'a chunk size line is too long')
  }

  private emitBody(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.bodyBytes += chunk.length
    if (this.bodyBytes > this.limits.maxBodyBytes) throw bodyTooLarge(this.limits.maxBodyBytes)
    this.events.body(chunk)
  }

  private finish(): void {
    this.state = 'head'
    this.started = false
    this.events.end()
  }
}

function bodyTooLarge(limit: number): ParseError {
  return new ParseError('body_too_large', `the answer's body is over ${limit} bytes`)
}

function parseHead(text: string): ResponseHead {
  if (BAD_HEAD_BYTES.test(text)) throw new ParseError('malformed', 'a control character (a NUL, a DEL…), or a CR or LF not ending a line, in the answer head')
  // Line by line with indexOf, not split: no array of lines per answer.
  let lineEnd = text.indexOf('\r\n')
  if (lineEnd === -1) lineEnd = text.length
  const firstLine = text.slice(0, lineEnd)
  const statusLine = STATUS_LINE.exec(firstLine)
  if (!statusLine) throw new ParseError('malformed', `not an HTTP/1.x status line: "${firstLine.slice(0, 60)}"`)
  const minorVersion = Number(statusLine[1])
  const headers: Array<[string, string]> = []
  let close = false
  let keepAliveToken = false
  let keepAliveTimeoutS: number | undefined
  while (lineEnd < text.length) {
    const start = lineEnd + 2
    lineEnd = text.indexOf('\r\n', start)
    if (lineEnd === -1) lineEnd = text.length
    const line = text.slice(start, lineEnd)
    if (line.startsWith(' ') || line.startsWith('\t')) {
      // An obsolete folded line continues the header before it (RFC 9112 §5.2): joined with a space.
      const previous = headers[headers.length - 1]
      if (!previous) throw new ParseError('malformed', 'a folded header line with no header before it')
      previous[1] = `${previous[1]} ${line.trim()}`.trim()
      continue
    }
    const colon = line.indexOf(':')
    const name = colon > 0 ? line.slice(0, colon) : ''
    if (!TOKEN.test(name)) throw new ParseError('malformed', `bad header line "${line.slice(0, 60)}"`)
    const lower = name.toLowerCase()
    const value = line.slice(colon + 1).trim()
    headers.push([lower, value])
    if (lower === 'connection') {
      close ||= CLOSE_TOKEN.test(value)
      keepAliveToken ||= KEEP_ALIVE_TOKEN.test(value)
    } else if (lower === 'keep-alive') {
      const timeout = /(?:^|[,;\s])timeout\s*=\s*(\d+)/i.exec(value)
      if (timeout) keepAliveTimeoutS = Number(timeout[1])
    }
  }
  const keepAlive = minorVersion === 1 ? !close : keepAliveToken
  return { status: Number(statusLine[2]), reason: statusLine[3] ?? '', minorVersion, headers, keepAlive, keepAliveTimeoutS }
}

type Framing = 'none' | 'chunked' | 'close' | number

/** How the body ends (RFC 9112 §6.3): no body, chunked, at the close, or after so many bytes. */
function bodyFraming(head: ResponseHead): Framing {
  if (head.status === 204 || head.status === 304) return 'none'
  let transferEncoding: string | undefined
  let length: string | undefined
  for (const [name, value] of head.headers) {
    if (name === 'transfer-encoding') transferEncoding = transferEncoding === undefined ? value : `${transferEncoding},${value}`
    else if (name === 'content-length') {
      // Repeated lengths must agree ("5, 5" or two headers of 5); any disagreement could smuggle a second answer.
      for (const part of value.split(',')) {
        const trimmed = part.trim()
        if (length !== undefined && length !== trimmed) throw new ParseError('malformed', 'conflicting Content-Length headers')
        length = trimmed
      }
    }
  }
  // Transfer-Encoding wins over Content-Length, which is then ignored (RFC 9112 §6.3 point 3).
  if (transferEncoding !== undefined) {
    const codings = transferEncoding
      .toLowerCase()
      .split(',')
      .map((coding) => coding.trim())
      .filter((coding) => coding !== '' && coding !== 'identity')
    if (codings.length === 0) return 'close'
    // Only chunked is undone here: under any other transfer coding (gzip, chunked) the body would reach the caller still coded.
    if (codings.length > 1 || codings[0] !== 'chunked')
      throw new ParseError('malformed', `a transfer coding the server cannot undo ("${transferEncoding.slice(0, 40)}")`)
    return 'chunked'
  }
  if (length !== undefined) {
    if (!/^\d{1,15}$/.test(length)) throw new ParseError('malformed', `bad Content-Length "${length.slice(0, 20)}"`)
    return Number(length)
  }
  return 'close'
}
