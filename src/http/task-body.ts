import { MoonlightError } from '../errors.ts'
import { MAX_JSON_DEPTH, scanObject } from '../json-text.ts'
import { type TaskRequest, taskRequestSchema } from '../schemas.ts'
import { describeIssues } from './validate.ts'

/** A validated task request and its payload exactly as the caller wrote it. */
export interface TaskInput {
  task: TaskRequest
  /** The payload's own text from the body: forwarded byte for byte, never re-serialized. */
  payloadJson: string
}

/**
 * Reads the body of `POST /task/request`: valid JSON, nested at most MAX_JSON_DEPTH deep, of the
 * task request's shape. Throws the 400 that says which rule it broke.
 */
export function readTaskRequest(text: string): TaskInput {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch (error) {
    // A parser that runs out of stack has met nesting, not a syntax error.
    if (error instanceof RangeError) throw tooDeep()
    throw new MoonlightError(400, 'invalid_json', 'request body is not valid JSON')
  }
  const scan = scanObject(text)
  if (scan && scan.depth > MAX_JSON_DEPTH) throw tooDeep()
  const result = taskRequestSchema.safeParse(body)
  if (!result.success) throw new MoonlightError(400, 'invalid_body', 'invalid request body', { issues: describeIssues(result.error) })
  // The schema requires a payload, so a valid body is an object that has one.
  const [start, end] = scan!.members.get('payload')!
  return { task: result.data, payloadJson: text.slice(start, end) }
}

function tooDeep(): MoonlightError {
  return new MoonlightError(400, 'too_deep', `request body is nested deeper than ${MAX_JSON_DEPTH} levels`, { max_depth: MAX_JSON_DEPTH })
}
