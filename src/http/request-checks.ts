import type { Server } from 'bun'
import type { z } from 'zod'
import type { Settings } from '../config/settings.ts'
import { MoonlightError } from '../errors.ts'
import type { Credential, Grant, Role } from '../security/access.ts'
import { sourceAddress } from '../security/caller-address.ts'
import { describeIssues } from '../wire/issues.ts'
import { MAX_JSON_DEPTH, nestingDepth } from '../wire/json-text.ts'
import { type BodyLimits, discardOversizedBody } from './oversized-body.ts'

/**
 * The checks every request body and token goes through, each a small function that throws the one
 * error type. The task route (served from Bun's router) and the Hono routes both call these: one copy
 * of every rule, whichever router serves the path.
 */

/**
 * The grant of the request's token (see requestToken) if it holds `role`; throws 401, 403 or 429 as
 * Access.authorize does. The request's address is looked up only when the token fails.
 */
export function authorize(settings: Settings, request: Request, server: Server<unknown>, role: Role): Grant {
  return settings.access.authorize(new RequestCredential(requestToken(request.headers), settings, server, request), role)
}

/** The grant of a token a request may send but need not (see Access.optional): counted as a failure when unknown. */
export function optionalGrant(settings: Settings, request: Request, server: Server<unknown>): Grant | undefined {
  const token = requestToken(request.headers)
  return token === '' ? undefined : settings.access.optional(new RequestCredential(token, settings, server, request))
}

/** A request's token, with its address as a method rather than a closure made per request (every task has one). */
class RequestCredential implements Credential {
  readonly from = 'header'

  constructor(
    readonly token: string,
    private readonly settings: Settings,
    private readonly server: Server<unknown>,
    private readonly request: Request,
  ) {}

  address(): string {
    return clientAddress(this.settings, this.server, this.request)
  }
}

/**
 * A request's token, '' if none: `Authorization: Bearer <token>` (the scheme name case-insensitive,
 * RFC 9110), and as the original Moonlight took it, a bare `Authorization: <token>` or `X-Token:
 * <token>`. A value with another scheme (`Basic …`) is no token: it would otherwise be taken whole.
 */
export function requestToken(headers: Headers): string {
  const authorization = headers.get('authorization')
  if (authorization !== null && authorization !== '') return authorizationToken(authorization)
  return headers.get('x-token')?.trim() ?? ''
}

function authorizationToken(header: string): string {
  // Nearly every caller writes "Bearer " exactly: no lower-casing for them.
  if (header.startsWith('Bearer ') || (header.length > 7 && header.slice(0, 7).toLowerCase() === 'bearer ')) return header.slice(7).trim()
  const bare = header.trim()
  return /\s/.test(bare) ? '' : bare
}

/** The address a request came from (through trusted_proxies' X-Forwarded-For): what heartbeats are called at and failed authentications are counted by. */
export function clientAddress(settings: Settings, server: Server<unknown>, request: Request): string {
  return sourceAddress(server.requestIP(request)?.address, request.headers.get('x-forwarded-for'), settings.trustedProxies)
}

/**
 * Throws 415 unless the body is declared JSON. Without this, a form-encoded body (curl -d's default)
 * would surface as a puzzling "payload is required".
 */
function requireJsonType(contentType: string | null): void {
  // Nearly every caller sends exactly this: no regular expression for them.
  if (contentType === 'application/json' || (contentType !== null && /^application\/([\w.-]+\+)?json\b/i.test(contentType.trim()))) return
  throw new MoonlightError(415, 'unsupported_media_type', 'send the body as JSON with "Content-Type: application/json"', { received: contentType || null })
}

/**
 * A JSON body as text, at most `max_body_bytes`: a declared length over it is refused before anything is
 * kept (and before the content type is looked at), a body not declared JSON is refused unread, and a
 * chunked body is counted as it streams, so no body is ever held whole past the limit.
 */
export function readJsonText(request: Request, limits: BodyLimits): Promise<string> {
  // Not an async function: the common body (declared length, JSON) is Bun's own promise, with no frame of ours around it.
  const declared = request.headers.get('content-length')
  if (declared !== null && Number(declared) > limits.max_body_bytes) return bodyTooLarge(request, limits).then(throwIt)
  try {
    requireJsonType(request.headers.get('content-type'))
  } catch (error) {
    return Promise.reject(error)
  }
  // Bun holds a declared-length body to its length.
  if (declared !== null) return request.text()
  return readStreamedJsonText(request, limits)
}

function throwIt(error: MoonlightError): never {
  throw error
}

/** A body without a declared length (chunked), counted as it streams. */
async function readStreamedJsonText(request: Request, limits: BodyLimits): Promise<string> {
  const maxBytes = limits.max_body_bytes
  if (request.body === null) return ''
  const chunks: Uint8Array[] = []
  let received = 0
  const reader = request.body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    received += value.byteLength
    if (received > maxBytes) throw await bodyTooLarge(request, limits, reader, received)
    chunks.push(value)
  }
  try {
    return STRICT_UTF8.decode(Bun.concatArrayBuffers(chunks))
  } catch {
    throw notUtf8()
  }
}

/** UTF-8 that refuses bytes which are not (a leading BOM is dropped, as Request.text drops it). */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true })

/**
 * Throws 400 `invalid_json` when a declared-length body was not UTF-8 (RFC 8259 §8.1): Request.text
 * turned each bad sequence into U+FFFD, which would reach the agent as bytes the caller never sent.
 * Called only for a text that holds a U+FFFD (an ASCII text cannot: the look costs nothing on it). A
 * valid body's text is as long in UTF-8 as the body, or 3 bytes shorter (a BOM dropped); a sequence
 * replaced makes it longer, except a four-byte one cut after its third byte (one U+FFFD of three
 * bytes for three), which only the bytes themselves would show.
 */
export function requireUtf8(text: string, request: Request): void {
  const declared = request.headers.get('content-length')
  if (declared === null) return
  const excess = Buffer.byteLength(text) - Number(declared)
  if (excess !== 0 && excess !== -3) throw notUtf8()
}

function notUtf8(): MoonlightError {
  return new MoonlightError(400, 'invalid_json', 'request body is not valid JSON: it is not UTF-8')
}

/** The 413, once the rest of the body is read within oversized_body's bounds (see discardOversizedBody). */
async function bodyTooLarge(
  request: Request,
  limits: BodyLimits,
  reader?: ReadableStreamDefaultReader<Uint8Array>,
  received?: number,
): Promise<MoonlightError> {
  await discardOversizedBody(request, limits, reader, received)
  const maxBytes = limits.max_body_bytes
  // Closed after the answer: otherwise Bun would go on reading what is left past the bounds, to reuse the connection.
  return new MoonlightError(
    413,
    'body_too_large',
    `request body exceeds max_body_bytes (${maxBytes} bytes)`,
    { max_body_bytes: maxBytes },
    { connection: 'close' },
  )
}

/** Parses JSON text; throws 400 `invalid_json` (or `too_deep`, when the parser ran out of stack). */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch (error) {
    // A parser that runs out of stack has met nesting, not a syntax error.
    if (error instanceof RangeError) throw tooDeep()
    throw new MoonlightError(400, 'invalid_json', 'request body is not valid JSON')
  }
}

/** Throws 400 `too_deep` past MAX_JSON_DEPTH: agents' parsers and our own serializer would overflow their stacks. */
export function limitDepth(depth: number): void {
  if (depth > MAX_JSON_DEPTH) throw tooDeep()
}

/**
 * Validates a parsed body (or a query string's parameters: `what`) against `schema`; throws 400
 * `invalid_body` listing each bad field, its message naming what was read.
 */
export function validate<Schema extends z.ZodType>(schema: Schema, value: unknown, what: 'request body' | 'query string' = 'request body'): z.infer<Schema> {
  const result = schema.safeParse(value)
  if (!result.success) throw new MoonlightError(400, 'invalid_body', `invalid ${what}`, { issues: describeIssues(result.error) })
  return result.data
}

function tooDeep(): MoonlightError {
  return new MoonlightError(400, 'too_deep', `request body is nested deeper than ${MAX_JSON_DEPTH} levels`, { max_depth: MAX_JSON_DEPTH })
}

/** A JSON body of `schema`'s shape, through the same checks as a task request's. */
export async function readJsonBody<Schema extends z.ZodType>(request: Request, limits: BodyLimits, schema: Schema): Promise<z.infer<Schema>> {
  const text = await readJsonText(request, limits)
  if (text.indexOf('\uFFFD') !== -1) requireUtf8(text, request)
  const value = parseJson(text)
  limitDepth(nestingDepth(text))
  return validate(schema, value)
}
