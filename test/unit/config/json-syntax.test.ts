import { describe, expect, test } from 'bun:test'
import { syntaxErrorAt } from '../../../src/config/json-syntax.ts'
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
