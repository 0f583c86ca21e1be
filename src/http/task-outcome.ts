import { errorResponse, MoonlightError } from '../errors.ts'
import { ROOT_REGION } from '../fleet/regions.ts'
import { TASK_ANSWER_HEADERS } from '../security/answer-headers.ts'
import { type BroadcastOutcome, type BroadcastPart, broadcastJson } from '../tasks/broadcast.ts'
import type { Outcome } from '../tasks/outcome.ts'
import { OUTCOME_STATUS } from '../tasks/outcome.ts'
import type { Answer } from '../transports/types.ts'
import type { FailedAttempt, RetryOn } from '../wire/errors.ts'

/** When a caller turned away by a full queue may try again: soon, as slots free task by task. */
const QUEUE_RETRY_AFTER_S = 1

/** What a caller may learn of agents' failures: everything (the monitor role), or only which node and a generic reason. */
export type Disclosure = 'details' | 'generic'

/**
 * A single task's outcome as the caller's answer: the client's own answer as-is (status, content
 * type, body) plus who answered, or the JSON error that says why there is none.
 */
export function outcomeResponse(outcome: Outcome, taskId: string, disclosure: Disclosure = 'details', instanceId?: string): Response {
  if (outcome.kind !== 'answered') return errorResponse(outcomeError(outcome, disclosure), undefined, { 'x-task-id': taskId })
  const { answer, client, failedAttempts } = outcome
  if (answer.sharedHeaders) return sharedHeadersResponse(answer, taskId, client.nodeId, failedAttempts.length + 1, instanceId)
  // A plain object, not a Headers: the answer's names are already lower-case, and ours are set last so they win.
  // Filled by assignment, not spreads: this runs on every task.
  const headers: Record<string, string> = {}
  for (const name in answer.headers) headers[name] = answer.headers[name]!
  for (const name in TASK_ANSWER_HEADERS) headers[name] = TASK_ANSWER_HEADERS[name as keyof typeof TASK_ANSWER_HEADERS]
  headers['x-task-id'] = taskId
  headers['x-moonlight-node'] = client.nodeId
  headers['x-moonlight-attempts'] = String(failedAttempts.length + 1)
  // In a cluster: the instance that delivered the answer (the agent's holder when it was relayed).
  if (instanceId !== undefined) headers['x-moonlight-instance'] = answer.instance ?? instanceId
  return new Response(answer.body, { status: answer.status, headers })
}

/**
 * A caller's response headers kept per shared answer-header record (Answer.sharedHeaders): the agent's
 * passed headers and TASK_ANSWER_HEADERS, set once; then per task its id, and the node, attempts and
 * instance only when they differ from the last task's (one agent's answers mostly share one record, so
 * rarely). The Response copies them (the Fetch standard's Response fills a Headers of its own from init):
 * the next task's changes do not reach an earlier one's. Costs half of filling a record and a Headers per task.
 */
class KeptHeaders {
  readonly headers: Headers
  node = ''
  attempts = 0
  instance: string | undefined = undefined

  constructor(passed: Record<string, string>) {
    this.headers = new Headers(passed)
    for (const name in TASK_ANSWER_HEADERS) this.headers.set(name, TASK_ANSWER_HEADERS[name as keyof typeof TASK_ANSWER_HEADERS])
  }
}

const keptHeaders = new WeakMap<Record<string, string>, KeptHeaders>()

function sharedHeadersResponse(answer: Answer, taskId: string, nodeId: string, attempts: number, instanceId: string | undefined): Response {
  let kept = keptHeaders.get(answer.headers)
  if (kept === undefined) {
    kept = new KeptHeaders(answer.headers)
    keptHeaders.set(answer.headers, kept)
  }
  const { headers } = kept
  headers.set('x-task-id', taskId)
  if (kept.node !== nodeId) {
    headers.set('x-moonlight-node', nodeId)
    kept.node = nodeId
  }
  if (kept.attempts !== attempts) {
    headers.set('x-moonlight-attempts', String(attempts))
    kept.attempts = attempts
  }
  // In a cluster: the instance that delivered the answer (the agent's holder when it was relayed).
  const instance = instanceId === undefined ? undefined : (answer.instance ?? instanceId)
  if (kept.instance !== instance) {
    if (instance === undefined) headers.delete('x-moonlight-instance')
    else headers.set('x-moonlight-instance', instance)
    kept.instance = instance
  }
  return new Response(answer.body, { status: answer.status, headers })
}

/** Why a task has no answer, as the error the API documents for it. */
export function outcomeError(outcome: Exclude<Outcome, { kind: 'answered' }>, disclosure: Disclosure = 'details'): MoonlightError {
  const status = OUTCOME_STATUS[outcome.kind]
  const attempts = (list: FailedAttempt[]) => (disclosure === 'details' ? list : list.map(generic))
  switch (outcome.kind) {
    case 'no_client':
      if (outcome.boundary !== undefined) return outsideBoundary(outcome.region, outcome.boundary, outcome.fallback)
      return outcome.fallback === 'none'
        ? new MoonlightError(status, 'no_client', `no healthy client in region "${outcome.region}" or under it (fallback "none")`, { region: outcome.region })
        : new MoonlightError(status, 'no_client', `no healthy client in region "${outcome.region}" or above it`, { region: outcome.region })
    case 'unknown_node':
      return new MoonlightError(
        status,
        'unknown_node',
        outcome.region === ROOT_REGION ? `no client "${outcome.nodeId}"` : `no client "${outcome.nodeId}" in region "${outcome.region}" or under it`,
        { node_id: outcome.nodeId, region: outcome.region },
      )
    case 'node_unavailable':
      return new MoonlightError(status, 'node_unavailable', `client "${outcome.nodeId}" cannot take tasks now: ${outcome.why}`, {
        node_id: outcome.nodeId,
        reason: outcome.why,
      })
    case 'all_failed':
      if (outcome.reason === 'retry_budget_exhausted')
        return new MoonlightError(
          status,
          'all_attempts_failed',
          `the attempt failed and the region's retry budget allows no retry now (${outcome.failedAttempts.length} attempt)`,
          { region: outcome.region, reason: outcome.reason, attempts: attempts(outcome.failedAttempts) },
        )
      if (outcome.notRetried !== undefined)
        return new MoonlightError(status, 'all_attempts_failed', NOT_RETRIED[outcome.notRetried], {
          region: outcome.region,
          not_retried: outcome.notRetried,
          attempts: attempts(outcome.failedAttempts),
        })
      return new MoonlightError(status, 'all_attempts_failed', `every attempt failed (${outcome.failedAttempts.length})`, {
        region: outcome.region,
        attempts: attempts(outcome.failedAttempts),
      })
    case 'too_large':
      return new MoonlightError(status, 'answer_too_large', "the client's answer was too large", {
        region: outcome.region,
        attempts: attempts(outcome.failedAttempts),
      })
    case 'timed_out':
      return new MoonlightError(
        status,
        'timeout',
        `no answer within ${outcome.ownTimeout ? "the task's timeout" : 'task_timeout'} (${outcome.timeoutMs / 1000} s)`,
        {
          region: outcome.region,
          attempts: attempts(outcome.failedAttempts),
        },
      )
    case 'cancelled':
      return new MoonlightError(status, 'cancelled', 'the task was cancelled before a client answered', {
        region: outcome.region,
        attempts: attempts(outcome.failedAttempts),
      })
    case 'queue_timeout':
      return new MoonlightError(
        status,
        'queue_timeout',
        `every client of region "${outcome.region}" was busy and no slot freed within ${outcome.timeoutMs / 1000} s`,
        { region: outcome.region, waited_ms: Math.round(outcome.waitedMs) },
        { 'retry-after': String(QUEUE_RETRY_AFTER_S) },
      )
    case 'queue_full': {
      // A pool's queue, or the named agent's own (a task with node_id).
      const { nodeId, region, pool, max } = outcome
      const waiting = `${max} ${max === 1 ? 'task already waits' : 'tasks already wait'}`
      return new MoonlightError(
        status,
        'queue_full',
        nodeId === undefined
          ? `every client of region "${region}" is busy and ${waiting} for a slot`
          : `client "${nodeId}" is busy and ${waiting} for its slot`,
        nodeId === undefined ? { region, pool, max } : { node_id: nodeId, region, max },
        { 'retry-after': String(QUEUE_RETRY_AFTER_S) },
      )
    }
    case 'shutting_down':
      return new MoonlightError(status, 'shutting_down', 'the server shut down before a client answered', {
        region: outcome.region,
        attempts: attempts(outcome.failedAttempts),
      })
  }
}

/** Why a failed attempt was the last: its class is not in the task's retry_on. */
const NOT_RETRIED: Record<RetryOn, string> = {
  unreachable: 'the attempt could not reach its client, and retry_on leaves out "unreachable": not retried',
  lost: 'the attempt was lost after the task was sent (the client may have run it), and retry_on leaves out "lost": not retried, so the task ran at most once',
  status: 'the client answered with a 5xx, and retry_on leaves out "status": not retried',
}

/** A token limited to regions found no client inside them: its tasks are never sent outside, whatever fallback says. */
function outsideBoundary(region: string, boundary: string, fallback: 'none' | undefined): MoonlightError {
  const where = fallback === 'none' || region === boundary ? `in region "${region}" or under it` : `in region "${region}" or above it up to "${boundary}"`
  return new MoonlightError(
    OUTCOME_STATUS.no_client,
    'no_client',
    `no healthy client ${where}; this token is limited to regions, and its tasks are never sent outside them (boundary "${boundary}")`,
    { region, boundary },
  )
}

/**
 * Why an attempt failed, without what only an operator should see: the agent's address (in
 * "cannot reach 10.0.0.7:3000: …"), whether a port is open, what the agent's error page said.
 */
const GENERIC_REASONS: Record<FailedAttempt['kind'], string> = {
  unreachable: 'the client could not be reached',
  disconnected: 'the connection to the client was lost before it answered',
  dropped: 'the client could not take the task',
  invalid_answer: 'the client did not send a valid answer',
  refused: 'the client refused the call',
  timeout: 'timed out waiting for the client',
  too_large: "the client's answer was too large",
  status: 'the client answered with an error',
  internal: 'the server failed',
}

/** A broadcast part as a caller without the monitor role sees it: a 5xx without its body (the agent's own account), a failure with a generic reason. */
function genericPart(part: BroadcastPart): BroadcastPart {
  if (part.status >= 500 && part.kind === undefined && part.error === undefined) {
    const { response: _response, responseJson: _responseJson, responseBase64: _responseBase64, ...rest } = part
    return rest
  }
  // A part without a kind failed for a reason of the server's own (it stopped): nothing to hide.
  return part.kind === undefined ? part : { ...part, error: GENERIC_REASONS[part.kind] }
}

function generic(attempt: FailedAttempt): FailedAttempt {
  return {
    node_id: attempt.node_id,
    kind: attempt.kind,
    reason: attempt.status ? `answered ${attempt.status}` : GENERIC_REASONS[attempt.kind],
    ...(attempt.status ? { status: attempt.status } : {}),
  }
}

/** A broadcast's answer: every client's part, 200 if any answered, else 502; or 503 with no client at all. */
export function broadcastResponse(outcome: BroadcastOutcome, taskId: string, region: string, disclosure: Disclosure = 'details'): Response {
  if (outcome.kind === 'no_client') {
    return errorResponse(new MoonlightError(503, 'no_client', `no healthy client in region "${region}"`, { region }), undefined, { 'x-task-id': taskId })
  }
  const results = disclosure === 'details' ? outcome.results : outcome.results.map(genericPart)
  let answered = 0
  for (const result of results) if (result.error === undefined) answered++
  return new Response(broadcastJson({ task_id: taskId, region, targets: results.length, answered }, results), {
    status: answered ? 200 : 502,
    headers: { 'content-type': 'application/json', 'x-content-type-options': 'nosniff', 'x-task-id': taskId },
  })
}
