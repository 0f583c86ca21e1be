import { TASK_ANSWER_HEADERS } from '../answer-headers.ts'
import { type BroadcastOutcome, broadcastJson } from '../broadcast.ts'
import { OUTCOME_STATUS } from '../dispatcher.ts'
import { errorResponse, MoonlightError } from '../errors.ts'
import type { Outcome } from '../outcome.ts'

/**
 * A single task's outcome as the caller's answer: the client's own answer as-is (status, content
 * type, body) plus who answered, or the JSON error that says why there is none.
 */
export function outcomeResponse(outcome: Outcome, taskId: string): Response {
  if (outcome.kind !== 'answered') return errorResponse(outcomeError(outcome), undefined, { 'x-task-id': taskId })
  const { answer, client, failedAttempts } = outcome
  // A plain object, not a Headers: the answer's names are already lower-case, and ours come last so they win.
  const headers = {
    ...answer.headers,
    ...TASK_ANSWER_HEADERS,
    'x-task-id': taskId,
    'x-moonlight-node': client.nodeId,
    'x-moonlight-attempts': String(failedAttempts.length + 1),
  }
  return new Response(answer.body, { status: answer.status, headers })
}

/** Why a task has no answer, as the error the API documents for it. */
export function outcomeError(outcome: Exclude<Outcome, { kind: 'answered' }>): MoonlightError {
  const status = OUTCOME_STATUS[outcome.kind]
  switch (outcome.kind) {
    case 'no_client':
      return new MoonlightError(status, 'no_client', `no healthy client in region "${outcome.region}" or above it`, { region: outcome.region })
    case 'all_failed':
      return new MoonlightError(status, 'all_attempts_failed', `every attempt failed (${outcome.failedAttempts.length})`, {
        region: outcome.region,
        attempts: outcome.failedAttempts,
      })
    case 'too_large':
      return new MoonlightError(status, 'answer_too_large', "the client's answer was too large", { region: outcome.region, attempts: outcome.failedAttempts })
    case 'timed_out':
      return new MoonlightError(status, 'timeout', `no answer within task_timeout (${outcome.timeoutMs / 1000} s)`, {
        region: outcome.region,
        attempts: outcome.failedAttempts,
      })
    case 'shutting_down':
      return new MoonlightError(status, 'shutting_down', 'the server shut down before a client answered', {
        region: outcome.region,
        attempts: outcome.failedAttempts,
      })
  }
}

/** A broadcast's answer: every client's part, 200 if any answered, else 502; or 503 with no client at all. */
export function broadcastResponse(outcome: BroadcastOutcome, taskId: string, region: string): Response {
  if (outcome.kind === 'no_client') {
    return errorResponse(new MoonlightError(503, 'no_client', `no healthy client in region "${region}"`, { region }), undefined, { 'x-task-id': taskId })
  }
  const { results } = outcome
  const answered = results.filter((result) => result.error === undefined).length
  return new Response(broadcastJson({ task_id: taskId, region, targets: results.length, answered }, results), {
    status: answered ? 200 : 502,
    headers: { 'content-type': 'application/json', 'x-content-type-options': 'nosniff', 'x-task-id': taskId },
  })
}
