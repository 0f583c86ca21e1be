/**
 * Which of an agent's answer headers reach the caller. The answer's status, content type and body
 * pass as-is; its other headers pass an allow-list, so that an agent cannot speak for the server's
 * origin: no Set-Cookie, no CORS grant, no security policy of its own. Pure.
 */

/** Passed by default: what describes the content itself, and the application's own X-* headers. */
const DEFAULT_PASSED = new Set(['content-type', 'content-language', 'cache-control', 'etag', 'last-modified'])

/** X-* headers that are security policy, not application data: the server sets its own or none. */
const SECURITY_X_HEADERS = new Set([
  'x-content-type-options',
  'x-frame-options',
  'x-xss-protection',
  'x-permitted-cross-domain-policies',
  'x-dns-prefetch-control',
  'x-download-options',
  // Read by a proxy in front (nginx, Apache, lighttpd) as an order to serve a file or another location.
  'x-accel-redirect',
  'x-accel-buffering',
  'x-accel-charset',
  'x-accel-expires',
  'x-accel-limit-rate',
  'x-sendfile',
  'x-lighttpd-send-file',
])

/**
 * Never passed, whatever `answers.pass_headers` says: those that frame the body or describe one hop
 * (RFC 9110 §7.6.1), which the server writes itself. `content-encoding` is here because the body the
 * server sends is never an encoded one.
 */
const NEVER_PASSED = new Set([
  'connection',
  'content-encoding',
  'content-length',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/** The allow-list in force: the defaults plus `answers.pass_headers` (lower-cased names). */
export class HeaderPolicy {
  private readonly extra: ReadonlySet<string>

  constructor(passHeaders: readonly string[] = []) {
    this.extra = new Set(passHeaders.map((name) => name.toLowerCase()))
  }

  /** Whether the header `name` (lower case) of an agent's answer reaches the caller. */
  passes(name: string): boolean {
    if (NEVER_PASSED.has(name)) return false
    if (DEFAULT_PASSED.has(name) || this.extra.has(name)) return true
    return name.startsWith('x-') && !SECURITY_X_HEADERS.has(name) && !name.startsWith('x-moonlight-')
  }

  /** The headers that pass, lower-cased, from a task_response's header record. */
  filter(headers: Record<string, string>): Record<string, string> {
    const passed: Record<string, string> = {}
    for (const name in headers) {
      const lower = name.toLowerCase()
      if (this.passes(lower)) passed[lower] = headers[name]!
    }
    return passed
  }

  /**
   * The headers that pass from an HTTP agent's answer, its header lines as parsed (names already
   * lower-case), repeated ones joined as fetch's Headers joins them: one pass, one record.
   */
  filterLines(lines: ReadonlyArray<readonly [string, string]>): Record<string, string> {
    const passed: Record<string, string> = {}
    for (let index = 0; index < lines.length; index++) {
      const [name, value] = lines[index]!
      if (!this.passes(name)) continue
      const earlier = passed[name]
      passed[name] = earlier === undefined ? value : `${earlier}, ${value}`
    }
    return passed
  }
}

/** Every task answer: the browser must not guess another type, and an agent's HTML must not run as the server's page. */
export const TASK_ANSWER_HEADERS = { 'x-content-type-options': 'nosniff', 'content-security-policy': 'sandbox' } as const
