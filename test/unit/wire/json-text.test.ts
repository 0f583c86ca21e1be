import { describe, expect, test } from 'bun:test'
import { memberSpan, nestingDepth } from '../../../src/wire/json-text.ts'

const memberText = (text: string, key: string, from?: number, to?: number) => {
  const span = memberSpan(text, key, from, to)
  return span.start === -1 ? undefined : text.slice(span.start, span.end)
}

describe('memberSpan', () => {
  test("finds a member's value as it is written, spacing inside kept and around it trimmed", () => {
    expect(memberText('{"region":"usa", "payload" :  { "a" : [1, 2] } }', 'payload')).toBe('{ "a" : [1, 2] }')
    expect(memberText('{"payload":12345678901234567890}', 'payload')).toBe('12345678901234567890')
    expect(memberText('{"payload":"x"}', 'missing')).toBeUndefined()
  })

  test('the last of duplicate keys wins, as JSON.parse reads it', () => {
    expect(memberText('{"payload":1,"payload":{"second":true}}', 'payload')).toBe('{"second":true}')
  })

  test('a key written with escapes means what JSON.parse makes of it', () => {
    expect(memberText('{"pay\\u006coad":[true]}', 'payload')).toBe('[true]')
    expect(memberText('{"pay\\u006coadx":[true]}', 'payload')).toBeUndefined()
  })

  test('strings holding braces, quotes, colons and backslashes do not confuse it', () => {
    const text = '{"a":"}{[\\"]:,","payload":"end\\\\","b":{"payload":"inner"}}'
    expect(memberText(text, 'payload')).toBe('"end\\\\"')
    expect(JSON.parse(memberText(text, 'payload')!)).toBe(JSON.parse(text).payload)
  })

  test('only members of the object scanned count, not those of nested objects', () => {
    expect(memberText('{"outer":{"payload":1}}', 'payload')).toBeUndefined()
  })

  test('a range: the members of a nested object', () => {
    const text = '{"type":"task_response","payload":{"task_id":"t-1","response":{"ok":1}}}'
    const payload = memberSpan(text, 'payload')
    expect(memberText(text, 'response', payload.start, payload.end)).toBe('{"ok":1}')
    expect(payload.depth).toBe(3)
  })

  test('not an object: nothing found', () => {
    expect(memberSpan('[1,2]', 'payload')).toEqual({ depth: 0, start: -1, end: -1 })
    expect(memberSpan('  "text"', 'payload').start).toBe(-1)
  })

  test('measures depth 100 000 deep without recursion', () => {
    const deep = `{"payload":${'['.repeat(100_000)}${']'.repeat(100_000)}}`
    expect(memberSpan(deep, 'payload').depth).toBe(100_001)
  })
})

describe('nestingDepth', () => {
  test('counts arrays and objects, skips strings, never throws on broken text', () => {
    expect(nestingDepth('1')).toBe(0)
    expect(nestingDepth('{"a":[{"b":"[[[["}]}')).toBe(3)
    expect(nestingDepth('[[["unterminated')).toBe(3)
    expect(nestingDepth('['.repeat(200_000))).toBe(200_000)
  })
})
