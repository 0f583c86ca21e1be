/**
 * A failure the server reported (its `error`, `code` and details) or a server that could not be
 * reached (`status` 0, `code` "unreachable").
 */
export class MoonlightError extends Error {
  override name = 'MoonlightError'

  constructor(
    message: string,
    /** The HTTP status; 0 when no answer came. */
    readonly status: number,
    /** The server's machine code (`unauthorized`, `no_client`, `all_attempts_failed`, …). */
    readonly code: string,
    /** Everything else the error body carried: `region`, `attempts`, `issues`, `task_id`… */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message)
  }
}
