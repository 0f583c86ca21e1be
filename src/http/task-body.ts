import { memberSpan } from '../wire/json-text.ts'
import { isName } from '../wire/names.ts'
import { RETRY_ON_ALL, SINGLE_ONLY, type TaskRequest, taskRequestSchema } from '../wire/task.ts'
import { limitDepth, parseJson, validate } from './request-checks.ts'

/** A validated task request and its payload exactly as the caller wrote it. */
export interface TaskInput {
  task: TaskRequest
  /** The payload's own text from the body: forwarded byte for byte, never re-serialized. */
  payloadJson: string
}

/** Reads the body of `POST /task/request`: JSON, not too deep, of the task request's shape. */
export function readTaskRequest(text: string): TaskInput {
  const body = parseJson(text)
  // One scan gives both the depth and where the payload's text is.
  const payload = memberSpan(text, 'payload')
  limitDepth(payload.depth)
  // zod allocates ~40 cells per task on the common body; anything else, errors included, goes through it.
  const task = commonTaskRequest(body) ?? validate(taskRequestSchema, body)
  // The schema requires a payload, so a valid body is an object that has one.
  return { task, payloadJson: text.slice(payload.start, payload.end) }
}

/**
 * taskRequestSchema's result for a body it certainly accepts, checked by hand: an object whose every
 * key is one of the schema's, each of the right type and within bounds, with a payload, and no
 * single-task field on a broadcast. Undefined for anything else, which zod then checks and words
 * the errors of. The parsed body is fresh from JSON.parse and ours: it becomes the task itself
 * (mode defaulted), as zod's copy of it would read. test/unit/http/task-body.test.ts holds the two to
 * the same answers.
 */
export function commonTaskRequest(body: unknown): TaskRequest | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined
  const task = body as Record<string, unknown>
  let hasPayload = false
  for (const key in task) {
    const value = task[key]
    switch (key) {
      case 'payload':
        if (value === undefined) return undefined
        hasPayload = true
        break
      case 'region':
        if (value !== '' && !isName(value)) return undefined
        break
      case 'node_id':
        if (!isName(value)) return undefined
        break
      case 'mode':
        if (value !== 'single' && value !== 'broadcast' && value !== 'async') return undefined
        break
      case 'key':
        if (typeof value !== 'string' || value.length < 1 || value.length > 256) return undefined
        break
      case 'fallback':
        if (value !== 'parent' && value !== 'none') return undefined
        break
      case 'retry':
        if (typeof value !== 'boolean') return undefined
        break
      case 'retry_on':
        if (!isRetryOnList(value)) return undefined
        break
      case 'timeout':
      case 'queue_timeout':
        if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) return undefined
        break
      case 'priority':
        if (value !== 'high' && value !== 'normal' && value !== 'low') return undefined
        break
      default:
        return undefined
    }
  }
  if (!hasPayload) return undefined
  if (task.mode === 'broadcast') for (const field of SINGLE_ONLY) if (task[field] !== undefined) return undefined
  task.mode ??= 'single'
  return task as TaskRequest
}

/** retryOnListSchema's rule: known classes, each at most once. */
function isRetryOnList(value: unknown): boolean {
  if (!Array.isArray(value) || value.length > RETRY_ON_ALL.length) return false
  for (let i = 0; i < value.length; i++) {
    if (!(RETRY_ON_ALL as readonly unknown[]).includes(value[i])) return false
    for (let j = 0; j < i; j++) if (value[j] === value[i]) return false
  }
  return true
}
