import type { Client } from '../fleet/registry.ts'
import type { Answer } from '../transports/types.ts'
import type { FailedAttempt, RetryOn } from '../wire/errors.ts'

/**
 * How one task ended, as the dispatcher reports it. The core never speaks HTTP: the HTTP layer maps
 * each kind to a status (src/http/task-outcome.ts), and an async task or a cluster relay can map it
 * to something else.
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
  | { kind: 'queue_full'; region: string; pool: string; max: number }
  /** The server stopped before a client answered (`midAttempt`: while a client held the task). */
  | { kind: 'shutting_down'; region: string; failedAttempts: FailedAttempt[]; midAttempt?: true }
