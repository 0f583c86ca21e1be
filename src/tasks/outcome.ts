import type { Client } from '../fleet/registry.ts'
import type { Answer } from '../transports/types.ts'
import type { FailedAttempt, RetryOn } from '../wire/errors.ts'

/**
 * How one task ended, as the dispatcher reports it. The core never builds an HTTP answer: the HTTP
 * edge turns an outcome into one (src/http/task-outcome.ts), a stored task keeps that answer, and the
 * status each kind stands for (OUTCOME_STATUS, below) is also what the dashboard and /metrics count.
 */
export type Outcome =
  | { kind: 'answered'; answer: Answer; client: Client; failedAttempts: FailedAttempt[] }
  /**
   * No healthy client at or above the region (at or under it only, with fallback "none"; no higher
   * than `boundary`, the top of the caller's token's regions).
   */
  | { kind: 'no_client'; region: string; fallback?: 'none'; boundary?: string }
  /** The task's node_id names no client. */
  | { kind: 'unknown_node'; region: string; nodeId: string }
  /** The task's node_id names a client that cannot take tasks now (ejected, on trial, draining). */
  | { kind: 'node_unavailable'; region: string; nodeId: string; why: string }
  /**
   * Every attempt failed (unreachable, disconnected, 5xx) and retries ran out — or, with
   * `notRetried`, the last failed in a class the task's retry_on leaves out, and was not retried;
   * with `reason`, the retry budget refused the next attempt.
   */
  | { kind: 'all_failed'; region: string; failedAttempts: FailedAttempt[]; notRetried?: RetryOn; reason?: 'retry_budget_exhausted' }
  /** A client did the work, but its answer passed max_answer_bytes: doing it again would not make it smaller. */
  | { kind: 'too_large'; region: string; failedAttempts: FailedAttempt[] }
  /** task_timeout (or the task's shorter `timeout`: `ownTimeout`) passed; not retried, since the client may still be running it. */
  | { kind: 'timed_out'; region: string; failedAttempts: FailedAttempt[]; timeoutMs: number; ownTimeout?: boolean }
  /**
   * Cancelled by its owner (DELETE /task/{id}) before a client answered. `midAttempt`: cut while a
   * client held the task, which it may have done all the same.
   */
  | { kind: 'cancelled'; region: string; failedAttempts: FailedAttempt[]; midAttempt?: true }
  /** Every agent of its pool was full and the task waited for a slot longer than queue.timeout (or its own queue_timeout, or its deadline). */
  | { kind: 'queue_timeout'; region: string; waitedMs: number; timeoutMs: number }
  /** Every agent of its pool was full and queue.max tasks already waited there. */
  | { kind: 'queue_full'; region: string; pool: string; max: number /** The agent whose own queue is full (a task naming it). */; nodeId?: string | undefined }
  /** The server stopped before a client answered (`midAttempt`: while a client held the task). */
  | { kind: 'shutting_down'; region: string; failedAttempts: FailedAttempt[]; midAttempt?: true }

/** The HTTP status a caller gets for each way a task ends (the record the dashboard and /metrics count). */
export const OUTCOME_STATUS = {
  no_client: 503,
  unknown_node: 404,
  node_unavailable: 503,
  all_failed: 502,
  too_large: 502,
  timed_out: 504,
  shutting_down: 503,
  cancelled: 409,
  queue_timeout: 503,
  queue_full: 503,
} as const

/** Outcomes where no client was asked at all: counted as no_client on the dashboard and in /metrics. */
export const NOBODY_TO_ASK = new Set<Outcome['kind']>(['no_client', 'unknown_node', 'node_unavailable', 'queue_timeout', 'queue_full'])

/** Whether the task reached no client at all (nobody to ask, or stopped or cancelled before the first attempt): running it again later runs it once. */
export function reachedNoClient(outcome: Outcome): boolean {
  if (NOBODY_TO_ASK.has(outcome.kind)) return true
  // A cut first attempt is no failed attempt, but its client had the task: freeing a key for it
  // would let a retry run the task a second time.
  return (outcome.kind === 'shutting_down' || outcome.kind === 'cancelled') && outcome.failedAttempts.length === 0 && outcome.midAttempt !== true
}
