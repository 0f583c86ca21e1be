import { describe, expect, test } from 'bun:test'
import { spillParts } from '../../../src/cluster/spill.ts'

describe('a spilled answer in parts', () => {
  test('parts of at most the given length, in order, that join to the text', () => {
    const text = 'abcdefghij'.repeat(7)
    const parts = spillParts(text, 16)
    expect(parts.map((part) => part.length)).toEqual([16, 16, 16, 16, 6])
    expect(parts.join('')).toBe(text)
  })

  test('a surrogate pair is never split: each part is valid UTF-16, so Redis stores it as it is', () => {
    // '🙂' is two UTF-16 units; with parts of 4, a cut after 'abc' would fall inside it.
    const text = 'abc🙂def🙂🙂g'
    const parts = spillParts(text, 4)
    expect(parts.join('')).toBe(text)
    for (const part of parts) expect(part.isWellFormed()).toBe(true)
    expect(parts).toEqual(['abc', '🙂de', 'f🙂', '🙂g'])
  })

  test('an empty text is no parts; one shorter than a part is one', () => {
    expect(spillParts('', 4)).toEqual([])
    expect(spillParts('ab', 4)).toEqual(['ab'])
  })
})
