import { describe, expect, test } from 'bun:test'
import {
  commonRelayReply,
  commonRelayRequest,
  RELAY_MESSAGE_MAX_CHARS,
  readRelayReply,
  readRelayRequest,
  relayBatch,
  relayMembers,
  relayMessages,
  relayReplySchema,
  relayRequestSchema,
  replyText,
} from '../../../src/cluster/messages.ts'

const TRACEPARENT = '00-0123456789abcdef0123456789abcdef-0123456789abcdef-01'
const REQUEST = '"origin":"a","key":"a/1","task_id":"t-1","node_id":"agent-1","timeout_ms":30000'

/** Relayed tasks the hand-written check takes itself: zod must accept each and read it the same. */
const COMMON_REQUESTS = [
  `{${REQUEST},"payload":{"job":1}}`,
  `{${REQUEST},"raw_answer":true,"payload":null}`,
  `{${REQUEST},"raw_answer":true,"answer_ref":true,"payload":null}`,
  `{${REQUEST},"raw_answer":true,"batch_replies":true,"payload":{"job":1}}`,
  `{"payload":[1],${REQUEST}}`,
  `{${REQUEST},"traceparent":"${TRACEPARENT}","payload":{}}`,
  `{${REQUEST},"traceparent":"${TRACEPARENT}","tracestate":"vendor=a b,c=~","payload":{}}`,
  `{${REQUEST},"tracestate":"","payload":{}}`,
  `{"origin":"${'o'.repeat(256)}","key":"","task_id":"","node_id":"","timeout_ms":1,"payload":0}`,
  `{${REQUEST}}`,
  `{${REQUEST},"priority":"high","queue_timeout_ms":2500,"payload":{}}`,
  `{${REQUEST},"priority":"low","payload":{}}`,
  `{${REQUEST},"priority":"normal","queue_timeout_ms":1,"payload":{}}`,
]

/** Left to zod: refused ones, and valid ones with a key the schema drops. */
const REQUESTS_LEFT_TO_ZOD = [
  `{${REQUEST},"payload":{},"extra":1}`,
  `{"__proto__":{},${REQUEST},"payload":{}}`,
  `{"origin":"","key":"k","task_id":"t","node_id":"n","timeout_ms":1,"payload":{}}`,
  `{"origin":"${'o'.repeat(257)}","key":"k","task_id":"t","node_id":"n","timeout_ms":1,"payload":{}}`,
  `{"origin":"a","key":1,"task_id":"t","node_id":"n","timeout_ms":1,"payload":{}}`,
  `{"origin":"a","key":"k","task_id":null,"node_id":"n","timeout_ms":1,"payload":{}}`,
  `{"origin":"a","key":"k","task_id":"t","node_id":"n","timeout_ms":0,"payload":{}}`,
  `{"origin":"a","key":"k","task_id":"t","node_id":"n","timeout_ms":1.5,"payload":{}}`,
  `{"origin":"a","key":"k","task_id":"t","node_id":"n","timeout_ms":1e300,"payload":{}}`,
  `{"origin":"a","key":"k","task_id":"t","node_id":"n","timeout_ms":"5","payload":{}}`,
  `{"origin":"a","key":"k","task_id":"t","timeout_ms":5,"payload":{}}`,
  `{${REQUEST},"traceparent":"00-xyz","payload":{}}`,
  `{${REQUEST},"traceparent":"${TRACEPARENT.toUpperCase()}","payload":{}}`,
  `{${REQUEST},"tracestate":"é","payload":{}}`,
  `{${REQUEST},"tracestate":null,"payload":{}}`,
  `{${REQUEST},"raw_answer":false,"payload":{}}`,
  `{${REQUEST},"batch_replies":false,"payload":{}}`,
  `{${REQUEST},"batch_replies":1,"payload":{}}`,
  `{${REQUEST},"priority":"urgent","payload":{}}`,
  `{${REQUEST},"priority":null,"payload":{}}`,
  `{${REQUEST},"queue_timeout_ms":0,"payload":{}}`,
  `{${REQUEST},"queue_timeout_ms":1.5,"payload":{}}`,
  `{${REQUEST},"queue_timeout_ms":"5","payload":{}}`,
  '{}',
  '[]',
  'null',
  '"text"',
  '42',
]

/** Replies the hand-written check takes itself. */
const COMMON_REPLIES = [
  '{"key":"a/1","status":200,"headers":{"content-type":"application/json"}}',
  '{"key":"a/1","status":200,"headers":{},"body":"{\\"ok\\":true}"}',
  '{"key":"a/1","status":503,"headers":{"x-a":"1"},"retry":false}',
  '{"key":"a/1","status":100}',
  '{"key":"a/1","status":599,"body":""}',
  '{"key":""}',
]

const REPLIES_LEFT_TO_ZOD = [
  '{"key":"a/1","error":"gone","kind":"unreachable"}',
  '{"key":"a/1","error":"full","kind":"unreachable","full":true}',
  '{"key":"a/1","error":"x","kind":"status"}',
  '{"key":"a/1","status":99}',
  '{"key":"a/1","status":600}',
  '{"key":"a/1","status":200.5}',
  '{"key":"a/1","status":"200"}',
  '{"key":"a/1","status":200,"headers":{"a":1}}',
  '{"key":"a/1","status":200,"headers":[]}',
  '{"key":"a/1","status":200,"headers":null}',
  '{"key":"a/1","status":200,"headers":{"__proto__":"x"}}',
  '{"key":"a/1","status":200,"body":5}',
  '{"key":"a/1","status":200,"retry":true}',
  '{"key":"a/1","status":200,"extra":1}',
  '{"status":200}',
  '{"key":5}',
  'null',
  '[]',
]

/** What zod makes of a message's text: its data, or undefined if it refuses it. */
function byZod(schema: typeof relayRequestSchema | typeof relayReplySchema, text: string): unknown {
  const result = schema.safeParse(JSON.parse(text))
  return result.success ? result.data : undefined
}

/** The hand-checked request without its payload, which zod leaves out and the holder reads from the text. */
function withoutPayload(request: object | undefined): object | undefined {
  if (request === undefined) return undefined
  const { payload: _payload, ...rest } = request as Record<string, unknown>
  return rest
}

describe('relay requests: the hand-written check and zod agree', () => {
  test.each(COMMON_REQUESTS)('taken by hand: %s', (text) => {
    const common = commonRelayRequest(JSON.parse(text))
    expect(common).toBeDefined()
    expect(withoutPayload(common)).toEqual(byZod(relayRequestSchema, text) as object)
    expect(withoutPayload(readRelayRequest(text))).toEqual(byZod(relayRequestSchema, text) as object)
  })

  test.each(REQUESTS_LEFT_TO_ZOD)('left to zod: %s', (text) => {
    expect(commonRelayRequest(JSON.parse(text))).toBeUndefined()
    expect(readRelayRequest(text)).toEqual(byZod(relayRequestSchema, text) as never)
  })

  test('text that is not JSON is dropped', () => {
    expect(readRelayRequest('{"origin":')).toBeUndefined()
    expect(readRelayRequest('')).toBeUndefined()
  })
})

describe('relay replies: the hand-written check and zod agree', () => {
  test.each(COMMON_REPLIES)('taken by hand: %s', (text) => {
    expect(commonRelayReply(JSON.parse(text))).toEqual(byZod(relayReplySchema, text) as never)
    expect(readRelayReply(text)?.reply).toEqual(byZod(relayReplySchema, text) as never)
  })

  test.each(REPLIES_LEFT_TO_ZOD)('left to zod: %s', (text) => {
    expect(commonRelayReply(JSON.parse(text))).toBeUndefined()
    expect(readRelayReply(text)?.reply).toEqual(byZod(relayReplySchema, text) as never)
  })
})

describe('an answer travels as its own text', () => {
  const envelope = { key: 'a/7', status: 200, headers: { 'content-type': 'application/json' } }

  test.each(['{"ok":true,"big":12345678901234567890}', 'line one\nline two\n', '', '"\\u2028 \\" {"', 'é 🙂'])(
    'the body comes back byte for byte, raw and as a JSON string: %j',
    (body) => {
      for (const raw of [true, false]) {
        const read = readRelayReply(replyText(envelope, body, raw))
        expect(read).toEqual({ reply: raw ? envelope : { ...envelope, body }, body })
      }
    },
  )

  test('the raw form is the envelope, a newline and the body unescaped', () => {
    expect(replyText(envelope, '{"a":"b\\n"}', true)).toBe(`${JSON.stringify(envelope)}\n{"a":"b\\n"}`)
  })

  test('an envelope that also carries a body is ambiguous, and dropped', () => {
    expect(readRelayReply('{"key":"a/1","status":200,"body":"x"}\ny')).toBeUndefined()
  })

  test('a broken envelope is dropped, whatever follows it', () => {
    expect(readRelayReply('{"key":"a/1","status":200\n}')).toBeUndefined()
    expect(readRelayReply('{"key":"a/1","status":"200"}\n{}')).toBeUndefined()
  })

  test('a failure is one JSON object, read as before', () => {
    expect(readRelayReply('{"key":"a/1","error":"gone","kind":"unreachable"}')).toEqual({
      reply: { key: 'a/1', error: 'gone', kind: 'unreachable' },
      body: undefined,
    })
  })
})

describe('relay messages: batches of bounded size', () => {
  const sized = (chars: number, mark: string) => mark.padEnd(chars, '.')

  test('members ready together go as batches of at most RELAY_MESSAGE_MAX_CHARS, in order, each saying which it carries', () => {
    const third = Math.floor(RELAY_MESSAGE_MAX_CHARS / 3)
    const members = ['a', 'b', 'c', 'd', 'e'].map((mark) => sized(third, mark))
    const messages = relayMessages(members)
    expect(messages.map(({ from, to }) => [from, to])).toEqual([
      [0, 3],
      [3, 5],
    ])
    expect(messages.flatMap(({ text }) => relayMembers(text))).toEqual(members)
  })

  test('a member larger than the bound goes alone, as itself; one member is never framed', () => {
    const big = sized(RELAY_MESSAGE_MAX_CHARS + 10, 'big')
    const messages = relayMessages(['small', big, 'after'])
    expect(messages.map(({ text, from, to }) => [text === big ? 'big' : text, from, to])).toEqual([
      ['small', 0, 1],
      ['big', 1, 2],
      ['after', 2, 3],
    ])
    expect(relayMessages(['only'])).toEqual([{ text: 'only', from: 0, to: 1 }])
    expect(relayMessages(['x', 'y'])).toEqual([{ text: relayBatch(['x', 'y']), from: 0, to: 2 }])
  })

  test('a reply may name the key its body was spilled to', () => {
    const read = readRelayReply(replyText({ key: 'a/x.1', status: 200, headers: {}, body_ref: 'mls:spill:a/x.1' }, '', true))
    expect(read).toEqual({ reply: { key: 'a/x.1', status: 200, headers: {}, body_ref: 'mls:spill:a/x.1' }, body: '' })
  })
})

describe('relay batches: several messages as one', () => {
  const requests = [
    `{${REQUEST},"payload":{"job":1}}`,
    `{"origin":"a","key":"a/2","task_id":"t-2","node_id":"agent-2","timeout_ms":5,"payload":"line\\nbreak é 🙂 ["}`,
    `{"origin":"a","key":"a/3","task_id":"t-3","node_id":"agent-1","timeout_ms":7,"traceparent":"${TRACEPARENT}","payload":[1,2]}`,
  ]

  test('members come back as they went, each its own message', () => {
    expect(relayMembers(relayBatch(requests))).toEqual(requests)
    const replies = [replyText({ key: 'a/1', status: 200, headers: {} }, 'line one\nline two\n', true), '{"key":"a/2","error":"gone","kind":"unreachable"}', '']
    expect(relayMembers(relayBatch(replies))).toEqual(replies)
    expect(relayMembers(relayBatch(replies)).map((text) => readRelayReply(text)?.body)).toEqual(['line one\nline two\n', undefined, undefined])
  })

  test("the frame is the members' lengths, a newline and their texts", () => {
    expect(relayBatch(['{"a":1}', '{}'])).toBe('[7,2]\n{"a":1}{}')
  })

  test('a single message is read as itself', () => {
    for (const text of [...requests, ...COMMON_REPLIES, '', 'null']) expect(relayMembers(text)).toEqual([text])
  })

  test('a bad member is dropped alone: the others are read', () => {
    const members = [requests[0]!, '{"origin":', 'null', `{${REQUEST},"timeout_ms":0,"payload":{}}`, requests[2]!]
    const read = relayMembers(relayBatch(members)).map((text) => readRelayRequest(text)?.key)
    expect(read).toEqual(['a/1', undefined, undefined, undefined, 'a/3'])
  })

  test.each([
    '[7,2]{"a":1}{}',
    '[7,3]\n{"a":1}{}',
    '[7,1]\n{"a":1}{}',
    '[7,-1]\n{"a":1}{}',
    '[7,1.5]\n{"a":1}{}',
    '[7,"2"]\n{"a":1}{}',
    '[7,2\n{"a":1}{}',
    '[',
  ])('a frame whose lengths do not describe its text is dropped whole: %j', (text) => {
    expect(relayMembers(text)).toEqual([])
  })

  test('an empty batch carries nothing', () => {
    expect(relayMembers(relayBatch([]))).toEqual([])
  })
})
