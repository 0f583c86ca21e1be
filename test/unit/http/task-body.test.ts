import { describe, expect, test } from 'bun:test'
import { MoonlightError } from '../../../src/errors.ts'
import { validate } from '../../../src/http/request-checks.ts'
import { commonTaskRequest, readTaskRequest } from '../../../src/http/task-body.ts'
import { taskRequestSchema } from '../../../src/wire/task.ts'

/** Bodies the hand-written check takes itself: zod must accept each and read it the same. */
const COMMON = [
  '{"region":"eu","payload":{"a":1}}',
  '{"payload":{"a":1},"region":"eu"}',
  '{"payload":null}',
  '{"payload":0,"region":""}',
  '{"payload":"text","region":"eu-west.1:a@b_c-d"}',
  `{"payload":[1,2],"region":"${'r'.repeat(128)}"}`,
  '{"payload":{},"mode":"single"}',
  '{"payload":{},"mode":"async","region":"eu"}',
  '{"payload":{},"mode":"broadcast","region":"eu","timeout":2}',
  '{"payload":{},"key":"k"}',
  `{"payload":{},"key":"${'k'.repeat(256)}"}`,
  '{"payload":{},"node_id":"agent-1","retry":true}',
  '{"payload":{},"fallback":"none","retry":false}',
  '{"payload":{},"fallback":"parent"}',
  '{"payload":{},"retry_on":[]}',
  '{"payload":{},"retry_on":["unreachable"]}',
  '{"payload":{},"retry_on":["status","lost","unreachable"]}',
  '{"payload":{},"timeout":0.5,"queue_timeout":1e-3}',
  '{"payload":{},"priority":"high"}',
  '{"payload":{},"priority":"low","queue_timeout":3}',
  '{"payload":{"region":"x","mode":"bogus"},"region":"eu"}',
]

/** Bodies left to zod: refused ones, and valid ones with a key the schema drops. */
const LEFT_TO_ZOD = [
  '{"payload":{},"region":"eu","extra":1}',
  '{"__proto__":{},"payload":{}}',
  '{"region":"eu"}',
  '{}',
  '[]',
  '[{"payload":1}]',
  'null',
  '"text"',
  '42',
  'true',
  '{"payload":{},"region":"has space"}',
  '{"payload":{},"region":"__proto__"}',
  `{"payload":{},"region":"${'r'.repeat(129)}"}`,
  '{"payload":{},"region":5}',
  '{"payload":{},"region":null}',
  '{"payload":{},"node_id":""}',
  '{"payload":{},"node_id":"__proto__"}',
  '{"payload":{},"mode":"SINGLE"}',
  '{"payload":{},"mode":null}',
  '{"payload":{},"key":""}',
  `{"payload":{},"key":"${'k'.repeat(257)}"}`,
  '{"payload":{},"key":7}',
  '{"payload":{},"fallback":"up"}',
  '{"payload":{},"retry":"false"}',
  '{"payload":{},"retry_on":"lost"}',
  '{"payload":{},"retry_on":["lost","lost"]}',
  '{"payload":{},"retry_on":["timeout"]}',
  '{"payload":{},"retry_on":["lost","status","unreachable","lost"]}',
  '{"payload":{},"timeout":0}',
  '{"payload":{},"timeout":-1}',
  '{"payload":{},"timeout":"5"}',
  '{"payload":{},"queue_timeout":0}',
  '{"payload":{},"priority":"urgent"}',
  '{"payload":{},"mode":"broadcast","key":"k"}',
  '{"payload":{},"mode":"broadcast","node_id":"a","retry":false,"priority":"high"}',
  '{"payload":{},"mode":"broadcast","retry_on":["lost"]}',
  '{"payload":{},"mode":"broadcast","queue_timeout":1,"fallback":"none"}',
]

/** What zod says of a body: its task, or the 400 readTaskRequest would have thrown before the fast path existed. */
function zodReading(text: string): { task: unknown } | { error: unknown } {
  try {
    return { task: validate(taskRequestSchema, JSON.parse(text)) }
  } catch (error) {
    if (!(error instanceof MoonlightError)) throw error
    return { error: { status: error.status, body: error.toJSON() } }
  }
}

function reading(text: string): { task: unknown } | { error: unknown } {
  try {
    return { task: readTaskRequest(text).task }
  } catch (error) {
    if (!(error instanceof MoonlightError)) throw error
    return { error: { status: error.status, body: error.toJSON() } }
  }
}

describe('task body: the hand-written check and zod agree', () => {
  test.each(COMMON)('%s: taken by the fast path, read as zod reads it', (text) => {
    const fast = commonTaskRequest(JSON.parse(text))
    expect(fast).toBeDefined()
    const zod = taskRequestSchema.safeParse(JSON.parse(text))
    expect(zod.success).toBe(true)
    expect(fast).toStrictEqual(zod.data)
    expect(reading(text)).toStrictEqual(zodReading(text))
  })

  test.each(LEFT_TO_ZOD)('%s: left to zod, the same task or the same 400', (text) => {
    expect(commonTaskRequest(JSON.parse(text))).toBeUndefined()
    expect(reading(text)).toStrictEqual(zodReading(text))
  })

  test('the refused bodies of the table are refused with invalid_body', () => {
    const refused = LEFT_TO_ZOD.filter((text) => 'error' in zodReading(text))
    // All but the two with a key zod accepts and drops.
    expect(LEFT_TO_ZOD.filter((text) => !refused.includes(text))).toEqual(['{"payload":{},"region":"eu","extra":1}', '{"__proto__":{},"payload":{}}'])
    for (const text of refused) expect(zodReading(text)).toMatchObject({ error: { status: 400, body: { code: 'invalid_body' } } })
  })

  test('the payload is forwarded as written, whichever path read the body', () => {
    for (const text of ['{"region":"eu","payload": {"b" :2 }}', '{"payload": {"b" :2 },"extra":true}'])
      expect(readTaskRequest(text).payloadJson).toBe('{"b" :2 }')
  })
})
