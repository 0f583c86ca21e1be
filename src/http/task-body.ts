import { memberSpan } from '../wire/json-text.ts'
import { type TaskRequest, taskRequestSchema } from '../wire/task.ts'
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
  const task = validate(taskRequestSchema, body)
  // The schema requires a payload, so a valid body is an object that has one.
  return { task, payloadJson: text.slice(payload.start, payload.end) }
}
