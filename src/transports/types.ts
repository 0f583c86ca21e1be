import type { Client, Route } from '../fleet/registry.ts'
import type { TraceHeaders } from '../observe/tracing/trace-context.ts'
import type { Deadline } from '../tasks/deadlines.ts'
import type { Queueing } from '../tasks/routing.ts'
import type { AttemptFailure, RetryOn } from '../wire/errors.ts'

/** A client's answer to one task, passed back to the caller as-is. */
export interface Answer {
  status: number
  headers: Record<string, string>
  body: string | Uint8Array<ArrayBuffer>
  /** The instance that delivered it, when another one did (a relay in cluster mode). */
  instance?: string
  /** false: the client says this 5xx must not be retried elsewhere (a WebSocket task_response's `retry`). */
  retry?: false
  /**
   * `headers` is one record shared by every answer of the same head (an HTTP agent's, src/transports/http.ts):
   * read-only, and the caller's response headers may be made once for it (src/http/task-outcome.ts).
   */
  sharedHeaders?: true
}

/**
 * Why an attempt got no answer. Every kind but `timeout` and `too_large` is safe to retry on another
 * client: after those two the work may have been done (or still be running), and doing it again is
 * worse for most work than saying so.
 */
export type FailureKind = Exclude<AttemptFailure, 'status' | 'internal'>

/**
 * The retry_on class of an attempt failure (docs/routing.md "Retries and delivery"), or undefined for the two
 * never retried. `unreachable`: the task never reached an agent that would run it (no connection,
 * TLS refused, no open socket, a send buffer that dropped it, an agent refusing the signature, an
 * instance not listening for relays). `lost`: it was sent, or may have been, and no usable answer
 * came back (`disconnected`, `invalid_answer`). `status`: a 5xx answer.
 */
export const RETRY_CLASS: Readonly<Record<AttemptFailure, RetryOn | undefined>> = {
  unreachable: 'unreachable',
  dropped: 'unreachable',
  refused: 'unreachable',
  disconnected: 'lost',
  invalid_answer: 'lost',
  status: 'status',
  timeout: undefined,
  too_large: undefined,
  internal: undefined,
}

export class AttemptError extends Error {
  override name = 'AttemptError'
  constructor(
    readonly kind: FailureKind,
    message: string,
    /** Not the client's fault (its slots stayed full at the instance holding it): no verdict on its health. */
    private readonly blameless = false,
  ) {
    super(message)
  }

  /** Whether it speaks of the client's health: a too-large answer means the client did the work, only for this payload too much of it. */
  get countsAgainstClient(): boolean {
    return this.kind !== 'too_large' && !this.blameless
  }
}

/**
 * How a task reaches one client. `payloadJson` is the caller's payload as its own text. The
 * attempt watches `deadline` and fails with kind `timeout` when it expires.
 */
export interface Transport {
  /**
   * `mayResend` false: the task must not go out twice, not even once more on a fresh connection after
   * a pooled one closed as it was written (the agent might have read it): the attempt fails as lost.
   * `trace`: the W3C trace context the agent gets with the task (a header, or fields of the `task` frame).
   * `queueing`: the task's class and bound for a wait for a slot past the send (a relayed task waits at its agent's holder).
   */
  send(client: Client, taskId: string, payloadJson: string, deadline: Deadline, mayResend?: boolean, trace?: TraceHeaders, queueing?: Queueing): Promise<Answer>
  /**
   * Sends one task to many of its clients at once, if the transport can do better than a send each
   * (WebSocket: one publish on the region's topic). Each client's answer or failure goes to `sink`
   * by its index in `clients`, once, possibly before fanOut returns: no promise per client, as a
   * broadcast to thousands would otherwise allocate and settle one each. `trace`: as for send, the same for every client.
   */
  fanOut?(region: string, taskId: string, payloadJson: string, clients: readonly Client[], deadline: Deadline, sink: FanOutSink, trace?: TraceHeaders): void
}

/** Where a fan-out's answers go (see Transport.fanOut). */
export interface FanOutSink {
  /**
   * `checkedJson`: the body is JSON text that was already parsed, nests no deeper than
   * MAX_JSON_DEPTH and has no whitespace around it (a WebSocket answer's `response`, read from its
   * message), so the broadcast need not parse and measure it again.
   */
  answered(index: number, answer: Answer, checkedJson: boolean): void
  failed(index: number, error: AttemptError): void
}

/** One transport per protocol: a new way to reach clients is one more entry, not a branch in the dispatcher. */
export type Transports = Readonly<Record<Route, Transport>>

export const timedOut = (): AttemptError => new AttemptError('timeout', 'timed out waiting for the client')
