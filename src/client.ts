import { z } from 'zod'

/**
 * The small HTTP client behind `moonlight task`, `status` and `clients`. Every failure becomes a
 * `RequestFailed` with a one-line message the CLI prints as-is.
 */

export interface ServerTarget {
  /** The http(s) base URL, without a trailing slash. */
  server: string
  token?: string
}

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

/** The parts of GET /status the CLI shows; other fields pass through for --json. */
export const statusSchema = z.looseObject({
  server: z.string(),
  websocket: z.string(),
  clients: z.number(),
  tasks: z.number(),
  regions: z.record(z.string(), z.object({ clients: z.number(), active: z.number() })),
  version: z.string().optional(),
  uptime_s: z.number().optional(),
  tasks_total: z.number().optional(),
  tasks_failed: z.number().optional(),
  websocket_connections: z.number().optional(),
})
export type Status = z.infer<typeof statusSchema>

/** One row of GET /clients, as far as the CLI's table needs it. */
export const clientRowSchema = z.looseObject({
  node_id: z.string(),
  region: z.string(),
  protocol: z.string(),
  ip: z.string(),
  port: z.number(),
  weight: z.number(),
  state: z.string(),
  last_seen: z.string(),
  in_flight: z.number(),
  successes: z.number(),
  failures: z.number(),
  latency_ms: z.number(),
})
export const clientListSchema = z.looseObject({ clients: z.array(clientRowSchema) })
export type ClientList = z.infer<typeof clientListSchema>

/** The server's error body; `attempts` comes with 502 and 504. */
const errorBodySchema = z.object({
  error: z.string(),
  attempts: z.array(z.object({ node_id: z.string(), reason: z.string(), body: z.string().optional() })).optional(),
})

/** A raw answer: the status and body exactly as the server sent them. */
export interface RawAnswer {
  status: number
  contentType: string | null
  body: string
}

export async function fetchStatus(target: ServerTarget): Promise<Status> {
  return parseJson(await call(target, 'GET', '/status'), statusSchema, '/status')
}

export async function fetchClients(target: ServerTarget): Promise<ClientList> {
  return parseJson(await call(target, 'GET', '/clients'), clientListSchema, '/clients')
}

/** POSTs /task/request and returns the answer whatever its status: the caller decides what failed. */
export async function submitTask(target: ServerTarget, body: unknown, timeoutMs?: number): Promise<RawAnswer> {
  // The server answers within its task_timeout, which may be longer than Bun's 5-minute idle limit on fetch.
  return send(target, 'POST', '/task/request', JSON.stringify(body), timeoutMs, false)
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

async function call(target: ServerTarget, method: string, path: string): Promise<RawAnswer> {
  const answer = await send(target, method, path)
  if (answer.status >= 400) throw new RequestFailed(errorMessage(answer), answer.status)
  return answer
}

async function send(target: ServerTarget, method: string, path: string, body?: string, timeoutMs?: number, idleLimit = true): Promise<RawAnswer> {
  const headers: Record<string, string> = {}
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (target.token) headers.authorization = `Bearer ${target.token}`
  const signal = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs)
  try {
    const response = await fetch(`${target.server}${path}`, { method, headers, body, signal, timeout: idleLimit })
    return { status: response.status, contentType: response.headers.get('content-type'), body: await response.text() }
  } catch (error) {
    if (signal?.aborted) throw new RequestFailed(`no answer from ${target.server} within ${timeoutMs! / 1000} s`)
    throw new RequestFailed(`cannot reach ${target.server}: ${(error as Error).message}`)
  }
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
