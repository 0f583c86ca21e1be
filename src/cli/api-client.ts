import { z } from 'zod'
import { readLimited } from '../../packages/sdk/src/_read-limited.ts'
import { certificateFailure, SERVER_CA_HINT } from '../security/peer-certificate-errors.ts'
import { errorBodySchema } from '../wire/errors.ts'
import {
  type ClientList,
  type ClusterView,
  clientViewSchema,
  clusterViewSchema,
  readyzSchema,
  regionCountsSchema,
  type Status,
  statusSchema,
} from '../wire/views.ts'

export type { ClientList, Status } from '../wire/views.ts'

/**
 * The small HTTP client behind `moonlight task`, `status` and `clients`. Every failure becomes a
 * `RequestFailed` with a one-line message the CLI prints as-is.
 */

export interface ServerTarget {
  /** The http(s) base URL, without a trailing slash. */
  server: string
  token?: string
  /** A PEM CA bundle the server's certificate is verified against (`--ca`); the system's CAs without it. */
  ca?: string
  /** The largest answer read, in bytes once unpacked (`--max-answer-bytes`); MAX_ANSWER_BYTES without it. */
  maxAnswerBytes?: number
}

/**
 * The largest answer a command reads by default: four times the server's default max_answer_bytes (room
 * for a broadcast's several answers). A gzip bomb or a body without end must not fill the memory.
 */
export const MAX_ANSWER_BYTES = 64 * 1024 * 1024

/** The request did not produce a successful answer: unreachable, timed out, or an error status. */
export class RequestFailed extends Error {
  override name = 'RequestFailed'

  constructor(
    message: string,
    /** The HTTP status, when the server answered. */
    readonly status?: number,
  ) {
    super(message)
  }
}

/** What the CLI reads is parsed with the server's own wire schemas; fields it does not know pass through for --json. */
// A server from before the failing state sends no `failing` count per region: read as none, so the CLI
// still shows an older server's status rather than refusing it as the wrong shape.
const statusAnswerSchema = statusSchema.extend({ regions: z.record(z.string(), regionCountsSchema.extend({ failing: z.number().int().default(0) })) }).loose()
const clientListAnswerSchema = z.object({ clients: z.array(clientViewSchema.loose()) }).loose()

/** A raw answer: the status and body exactly as the server sent them. */
export interface RawAnswer {
  status: number
  contentType: string | null
  /** The body as text, to read (bytes that are not UTF-8 are U+FFFD in it). */
  body: string
  /** The body's own bytes, to pass on: an agent's answer may be binary. */
  bytes: Uint8Array
}

/**
 * How long `status`, `clients` and `cluster` wait by default (their --timeout). The server answers
 * these at once; without a bound, one that accepted the connection and never answered (or sent its
 * body forever) would hold the command for Bun's 5-minute idle limit, or without end.
 */
export const VIEW_TIMEOUT_S = 10

export async function fetchStatus(target: ServerTarget, timeoutMs = VIEW_TIMEOUT_S * 1000): Promise<Status> {
  return parseJson(await call(target, 'GET', '/status', timeoutMs), statusAnswerSchema, '/status')
}

export async function fetchCluster(target: ServerTarget, timeoutMs = VIEW_TIMEOUT_S * 1000): Promise<ClusterView> {
  return parseJson(await call(target, 'GET', '/cluster', timeoutMs), clusterViewSchema, '/cluster')
}

export async function fetchClients(target: ServerTarget, timeoutMs = VIEW_TIMEOUT_S * 1000): Promise<ClientList> {
  return parseJson(await call(target, 'GET', '/clients', timeoutMs), clientListAnswerSchema, '/clients')
}

/** Resolves when GET /readyz says the server may take traffic; a 503 throws `RequestFailed` with the reason. */
export async function fetchReadiness(target: ServerTarget, timeoutMs: number): Promise<void> {
  parseJson(await call(target, 'GET', '/readyz', timeoutMs), readyzSchema, '/readyz')
}

/** POSTs /task/request and returns the answer whatever its status: the caller decides what failed. */
/** `body` is the request's JSON text, written by the caller so that the payload's own text is kept. */
export async function submitTask(target: ServerTarget, body: string, timeoutMs?: number, headers: Record<string, string> = {}): Promise<RawAnswer> {
  // The server answers within its task_timeout, which may be longer than Bun's 5-minute idle limit on fetch.
  return send(target, 'POST', '/task/request', body, timeoutMs, false, headers)
}

/** A stored task's answer as-is (`GET /task/{id}/result`), waiting up to `waitS` for it. */
export async function fetchTaskResult(target: ServerTarget, taskId: string, waitS?: number, timeoutMs?: number): Promise<RawAnswer> {
  const query = waitS === undefined ? '' : `?wait=${waitS}`
  return send(target, 'GET', `/task/${encodeURIComponent(taskId)}/result${query}`, undefined, timeoutMs, false)
}

/** Cancels a stored task (`DELETE /task/{id}`). */
export async function cancelTask(target: ServerTarget, taskId: string, timeoutMs?: number): Promise<RawAnswer> {
  return call(target, 'DELETE', `/task/${encodeURIComponent(taskId)}`, timeoutMs)
}

/** The one-line reason an error answer gives: the server's `error` field, else the start of the body. */
export function errorMessage(answer: RawAnswer): string {
  let reason = ''
  try {
    const parsed = errorBodySchema.safeParse(JSON.parse(answer.body))
    if (parsed.success) {
      const { error, attempts } = parsed.data
      // A 502 lists each failed attempt: which agent, and why (with the start of what a 5xx said).
      const describe = (attempt: NonNullable<typeof attempts>[number]) =>
        `${attempt.node_id} ${attempt.reason}${attempt.body ? ` (${attempt.body.slice(0, 120)})` : ''}`
      reason = attempts?.length ? `${error}: ${attempts.map(describe).join(', ')}` : error
    }
  } catch {
    // Not JSON (an agent may answer plain text): fall back to the body itself.
  }
  if (!reason) reason = answer.body.slice(0, 200)
  reason = reason.replace(/\s+/g, ' ').trim()
  return reason ? `${reason} (HTTP ${answer.status})` : `HTTP ${answer.status}`
}

async function call(target: ServerTarget, method: string, path: string, timeoutMs?: number): Promise<RawAnswer> {
  const answer = await send(target, method, path, undefined, timeoutMs)
  if (answer.status >= 400) throw new RequestFailed(errorMessage(answer), answer.status)
  return answer
}

async function send(
  target: ServerTarget,
  method: string,
  path: string,
  body?: string,
  timeoutMs?: number,
  idleLimit = true,
  extraHeaders: Record<string, string> = {},
): Promise<RawAnswer> {
  const headers: Record<string, string> = { ...extraHeaders }
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (target.token) headers.authorization = `Bearer ${target.token}`
  const signal = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs)
  try {
    const tls = target.ca === undefined ? {} : { tls: { ca: target.ca } }
    const response = await fetch(`${target.server}${path}`, { method, headers, body, signal, timeout: idleLimit, ...tls })
    const bytes = await readAnswer(response, target)
    return { status: response.status, contentType: response.headers.get('content-type'), body: new TextDecoder().decode(bytes), bytes }
  } catch (error) {
    if (signal?.aborted) throw new RequestFailed(`no answer from ${target.server} within ${timeoutMs! / 1000} s`)
    if (error instanceof RequestFailed) throw error
    const certificate = certificateFailure(error)
    if (certificate) throw new RequestFailed(`cannot reach ${target.server}: ${certificate}; ${SERVER_CA_HINT}`)
    throw new RequestFailed(`cannot reach ${target.server}: ${withoutFetchAdvice((error as Error).message)}`)
  }
}

/** The body's bytes (unpacked) within the target's limit (the SDK's readLimited); past it the command fails. */
async function readAnswer(response: Response, target: ServerTarget): Promise<Uint8Array> {
  const limit = target.maxAnswerBytes ?? MAX_ANSWER_BYTES
  const bytes = await readLimited(response, limit)
  if (bytes === undefined) throw new RequestFailed(`answer from ${target.server} passed ${limit} bytes: not read further`, response.status)
  return bytes
}

/** Bun ends some fetch errors (too many redirects, say) with advice to its caller's code, not to a shell user: dropped. */
function withoutFetchAdvice(message: string): string {
  return message.replace(/\.?\s*For more information, pass `verbose: true` in the second argument to fetch\(\)\.?$/, '')
}

function parseJson<T>(answer: RawAnswer, schema: z.ZodType<T>, path: string): T {
  let value: unknown
  try {
    value = JSON.parse(answer.body)
  } catch {
    throw new RequestFailed(`${path} did not answer JSON: is this a Moonlight server?`)
  }
  const result = schema.safeParse(value)
  if (!result.success) throw new RequestFailed(`${path} answered an unexpected shape: is this a Moonlight server?`)
  return result.data
}
