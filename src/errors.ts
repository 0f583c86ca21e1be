import type { ContentfulStatusCode } from 'hono/utils/http-status'
import type { ErrorBody, ErrorCode, ErrorFrame } from './wire/errors.ts'

/**
 * A failure with an HTTP status and a machine-readable code. Thrown anywhere a request is handled;
 * `errorResponse` turns it into `{ "error": message, "code": code, ...details }`.
 */
export class MoonlightError extends Error {
  override name = 'MoonlightError'

  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    /** Headers the answer must carry (e.g. `connection: close` after a body we will not read). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
  }

  toJSON(): ErrorBody {
    return { error: this.message, code: this.code, ...this.details }
  }
}

/** Codes for the statuses Hono itself throws (HTTPException): mapped by status, never by message text. */
const HONO_CODES: Partial<Record<number, ErrorCode>> = {
  400: 'bad_request',
  401: 'unauthorized',
  404: 'not_found',
  413: 'body_too_large',
  415: 'unsupported_media_type',
}

/**
 * The one place an HTTP error answer is built: a MoonlightError as it is; an error that carries an
 * HTTP status (Hono's HTTPException) with its status and the code for it; anything else is a 500
 * `internal`, reported through `report` — never a stack trace or an HTML page to the caller.
 */
export function errorResponse(error: unknown, report: (error: unknown) => void = () => {}, headers: Record<string, string> = {}): Response {
  if (error instanceof MoonlightError) return jsonResponse(error.toJSON(), error.status, { ...headers, ...error.headers })
  const status = (error as { status?: unknown } | null)?.status
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const message = (error as Error).message || 'bad request'
    return jsonResponse({ error: message, code: HONO_CODES[status] ?? 'bad_request' }, status, headers)
  }
  // A body whose read ended with its connection (the caller left, or Bun timed it out): the caller's doing, not a fault here.
  if (error instanceof DOMException && error.name === 'AbortError')
    return jsonResponse({ error: `the request body could not be read: ${error.message}`, code: 'bad_request' }, 400, headers)
  report(error)
  return jsonResponse({ error: 'internal server error', code: 'internal' }, 500, headers)
}

/** A JSON answer built without a Hono context, as `c.json` would build it. */
export function jsonResponse(body: unknown, status: number, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...headers, 'content-type': 'application/json', 'x-content-type-options': 'nosniff' } })
}

/** The one place a WebSocket `error` frame is built: the message for people, the code for programs. */
export function errorFrame(message: string, code: ErrorCode): string {
  const frame: ErrorFrame = { type: 'error', payload: { message, code } }
  return JSON.stringify(frame)
}

/** A new node id past `max_clients`: the same refusal for an HTTP heartbeat and a WebSocket register. */
export function tooManyClients(maxClients: number): MoonlightError {
  return new MoonlightError(503, 'too_many_clients', `the server holds as many clients as it may (max_clients = ${maxClients}); try again later`, {
    max_clients: maxClients,
  })
}

/** Any request that arrives while the server stops. */
export function shuttingDown(): MoonlightError {
  return new MoonlightError(503, 'shutting_down', 'the server is shutting down')
}
