import { describe, expect, test } from 'bun:test'
import { parseTracestate } from '../../../src/observe/tracing/trace-context.ts'

describe('W3C tracestate', () => {
  test('keys and values at their longest, tenant keys and every allowed character pass', () => {
    const longest = `${'k'.repeat(256)}=${'v'.repeat(256)}`
    expect(parseTracestate(`a=1,${longest}`)).toBe('a=1')
    const valueChars = Array.from({ length: 0x7f - 0x21 }, (_, index) => String.fromCharCode(0x21 + index))
      .filter((char) => char !== ',' && char !== '=')
      .join('')
    for (const member of ['t0@sys=1', `${'a'.repeat(241)}@${'b'.repeat(14)}=x`, 'a_-*/9=x y', `k=${valueChars}`]) expect(parseTracestate(member)).toBe(member)
  })

  test('a value of spaces only, a tenant or system too long, or a control character drops the whole list', () => {
    for (const invalid of ['a=1,b= ', `${'a'.repeat(242)}@b=1`, `a@${'b'.repeat(15)}=1`, 'a=1\u0000', 'a=\u007f'])
      expect({ invalid, parsed: parseTracestate(invalid) }).toEqual({ invalid, parsed: undefined })
  })

  test('one member over 512 characters on its own is cut, leaving nothing', () => {
    expect(parseTracestate(`${'k'.repeat(256)}=${'v'.repeat(256)}`)).toBeUndefined()
  })
})
