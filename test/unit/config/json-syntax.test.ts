import { describe, expect, test } from 'bun:test'
import { duplicateKeyIn, syntaxErrorAt } from '../../../src/config/json-syntax.ts'
import { nearestName } from '../../../src/config/near-name.ts'

describe('syntaxErrorAt', () => {
  test('valid JSON has no error, whatever JSON.parse accepts', () => {
    for (const text of ['{}', '[]', ' 1 ', '"a\\u00e9\\n"', '{"a": [1, -2.5e3, true, false, null, {"b": {}}]}', '\n{\n "x": []\n}\n']) {
      JSON.parse(text)
      expect({ text, at: syntaxErrorAt(text) }).toEqual({ text, at: undefined })
    }
  })

  test('names the line and column of the first fault', () => {
    const cases: Array<[string, number, number]> = [
      ['{\n  "port": 8080,\n}', 3, 1],
      ['{\n  "a": 1\n  "b": 2\n}', 3, 3],
      ['{"a": tru}', 1, 7],
      ['{"a": 1', 1, 8],
      ['{"a": "x\ny"}', 1, 9],
      ['[1, 2,]', 1, 7],
      ['{"a": 01}', 1, 8],
      ['port = 8080', 1, 1],
      ['{} {}', 1, 4],
      ['{"a" 1}', 1, 6],
      ['"\\x"', 1, 2],
    ]
    for (const [text, line, column] of cases) {
      expect(() => JSON.parse(text)).toThrow()
      expect({ text, at: syntaxErrorAt(text) }).toEqual({ text, at: { line, column } })
    }
  })

  test('a nesting far deeper than any stack is scanned, not recursed into', () => {
    expect(syntaxErrorAt(`${'['.repeat(1_000_000)}}`)).toEqual({ line: 1, column: 1_000_001 })
  })
})

describe('duplicateKeyIn', () => {
  test('finds a key given twice in one object, by its dotted path, with where each one starts', () => {
    expect(duplicateKeyIn('{\n  "tokens": ["a"],\n  "tokens": ["b"]\n}')).toEqual({
      path: 'tokens',
      first: { line: 2, column: 3 },
      second: { line: 3, column: 3 },
    })
    expect(duplicateKeyIn('{"a":1,"b":{"c":[{"d":1},{"d":1,"d":2}]}}')?.path).toBe('b.c.1.d')
    // Escapes are read as JSON.parse reads them: "a\u0062" is "ab".
    expect(duplicateKeyIn('{"a\\u0062":1,"ab":2}')?.path).toBe('ab')
    expect(duplicateKeyIn('{"__proto__":1,"__proto__":2}')?.path).toBe('__proto__')
  })

  test('the same key in different objects, and strings that look like keys, are no duplicate', () => {
    for (const text of ['{"a":{"a":1},"b":{"a":2}}', '[{"a":1},{"a":2}]', '{"x":[{}, "a"], "a": 1}', '{"a":"{\\"a\\":1}","b":"a"}', '{"a\\"":1,"a":2}']) {
      JSON.parse(text)
      expect({ text, twice: duplicateKeyIn(text) }).toEqual({ text, twice: undefined })
    }
  })

  test('a nesting far deeper than any stack is scanned, not recursed into', () => {
    expect(duplicateKeyIn(`${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`)).toBeUndefined()
  })
})

describe('nearestName', () => {
  test('finds the known name a typo is near; nothing for a name near none', () => {
    const keys = ['region_hierarchy', 'retry_count', 'port', 'path', 'tokens']
    expect(nearestName('regoin_hierarchy', keys)).toBe('region_hierarchy')
    expect(nearestName('retry_cuont', keys)).toBe('retry_count')
    expect(nearestName('pth', keys)).toBe('path')
    expect(nearestName('Tokens', keys)).toBe('tokens')
    expect(nearestName('colour', keys)).toBeUndefined()
  })
})
