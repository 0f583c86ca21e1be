import { describe, expect, test } from 'bun:test'
import { commonTaskResponse, wsInboundSchema } from '../../../src/wire/ws.ts'

/** Answers the hand-written check takes itself: zod must accept each and read it the same. */
const COMMON = [
  '{"type":"task_response","payload":{"task_id":"t1","response":{"ok":true}}}',
  '{"payload":{"task_id":"t1","response":{"ok":true}},"type":"task_response"}',
  '{"type":"task_response","payload":{"task_id":"t1","response":null,"status":200}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":"text","status":599,"retry":false}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":[1],"status":201,"retry":true}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{}}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"Content-Type":"text/plain","x-a":"","X-B":"caf\u00e9\\tok"}}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"x-ok!#$%&\'*+.^_`|~":"v"}}}',
]

/** Answers left to zod: refused ones, ones with keys zod drops, and the other message types. */
const LEFT_TO_ZOD = [
  '{"type":"task_response","payload":{"task_id":"t1","response":1},"extra":1}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"extra":1}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"__proto__":"x"}}}',
  '{"type":"task_response","payload":{"task_id":"t1"}}',
  '{"type":"task_response","payload":{"task_id":""}}',
  '{"type":"task_response","payload":{"task_id":5}}',
  '{"type":"task_response","payload":{"response":1}}',
  '{"type":"task_response","payload":null}',
  '{"type":"task_response","payload":[{"task_id":"t1"}]}',
  '{"type":"task_response"}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"status":199}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"status":600}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"status":200.5}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"status":"200"}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"status":null}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":[]}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":null}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"bad name":"v"}}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"x-a":"line\\nbreak"}}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"x-a":"\u0100"}}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"x-a":1}}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"x-a":{"b":"c"}}}}',
  '{"type":"task_response","payload":{"task_id":"t1","response":1,"retry":"false"}}',
  '{"type":"heartbeat"}',
  '{"type":"heartbeat","payload":{"weight":2}}',
  '{"type":"monitor","payload":{"token":"t"}}',
  '{"type":"TASK_RESPONSE","payload":{"task_id":"t1"}}',
  '{"payload":{"task_id":"t1"}}',
  '[]',
  'null',
  '"task_response"',
]

const zodReading = (text: string): { data: unknown } | { issues: unknown } => {
  const result = wsInboundSchema.safeParse(JSON.parse(text))
  return result.success ? { data: result.data } : { issues: result.error.issues }
}

describe('task_response: the hand-written check and zod agree', () => {
  test.each(COMMON)('%s: taken by the fast path, read as zod reads it', (text) => {
    const fast = commonTaskResponse(JSON.parse(text))
    expect(fast).toBeDefined()
    expect({ data: fast } as { data: unknown } | { issues: unknown }).toStrictEqual(zodReading(text))
  })

  test.each(LEFT_TO_ZOD)('%s: left to zod', (text) => {
    expect(commonTaskResponse(JSON.parse(text))).toBeUndefined()
  })

  test('the table leaves to zod both answers it refuses and answers it accepts and trims', () => {
    const accepted = LEFT_TO_ZOD.filter((text) => 'data' in zodReading(text))
    expect(accepted).toEqual([
      '{"type":"task_response","payload":{"task_id":"t1","response":1},"extra":1}',
      '{"type":"task_response","payload":{"task_id":"t1","response":1,"extra":1}}',
      '{"type":"task_response","payload":{"task_id":"t1","response":1,"headers":{"__proto__":"x"}}}',
      '{"type":"heartbeat"}',
      '{"type":"heartbeat","payload":{"weight":2}}',
      '{"type":"monitor","payload":{"token":"t"}}',
    ])
  })
})
