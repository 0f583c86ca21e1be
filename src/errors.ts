import type { ContentfulStatusCode } from 'hono/utils/http-status'

/**
 * A failure with an HTTP status and a machine-readable code; the app's one error handler turns it
 * into `{ "error": message, "code": code, ...details }`.
 */
export class MoonlightError extends Error {
  override name = 'MoonlightError'

  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message)
  }

  toJSON(): Record<string, unknown> {
    return { error: this.message, code: this.code, ...this.details }
  }
}

/** A new node id past `max_clients`: the same refusal for an HTTP heartbeat and a WebSocket register. */
export function tooManyClients(maxClients: number): MoonlightError {
  return new MoonlightError(503, 'too_many_clients', `the server holds as many clients as it may (max_clients = ${maxClients}); try again later`, {
    max_clients: maxClients,
  })
}
