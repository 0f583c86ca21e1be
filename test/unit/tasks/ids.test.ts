import { describe, expect, test } from 'bun:test'
import { RandomTaskIds, TASK_ID_PATTERN } from '../../../src/tasks/ids.ts'

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

describe('task ids', () => {
  test('1000 ids are distinct, 17 letters and digits each (log2(62) × 17 = 101 random bits)', () => {
    const ids = new RandomTaskIds()
    const made = Array.from({ length: 1000 }, () => ids.next())
    expect(new Set(made).size).toBe(1000)
    for (const id of made) expect(id).toMatch(TASK_ID_PATTERN)
    expect(TASK_ID_PATTERN.source).toBe('^[A-Za-z0-9]{17}$')
    expect(Math.log2(ALPHABET.length) * 17).toBeGreaterThanOrEqual(96)
  })

  test('no counter in them: every position takes nearly every character, and consecutive ids differ almost everywhere', () => {
    const ids = new RandomTaskIds()
    const made = Array.from({ length: 1000 }, () => ids.next())
    // A counter, or a per-process prefix, would leave the leading positions fixed across ids. With
    // 1000 uniform draws of 62 characters, a position missing more than 12 of them has odds below 1e-20.
    for (let position = 0; position < 17; position++) {
      const seen = new Set(made.map((id) => id[position]))
      expect({ position, distinct: seen.size >= 50 }).toEqual({ position, distinct: true })
    }
    // Uniform positions agree with probability 1/62: ten or more agreeing of 17 has odds below 1e-13.
    for (let i = 1; i < made.length; i++) {
      const [a, b] = [made[i - 1]!, made[i]!]
      const same = [...a].filter((char, position) => b[position] === char).length
      expect({ a, b, same: same < 10 }).toEqual({ a, b, same: true })
    }
  })

  test('each character comes from one random byte below 248, so all 62 are equally likely; 248-255 are skipped', () => {
    // A byte source the test controls: the id is a function of the bytes and nothing else (no counter, no clock).
    const source = (bytes: number[]) => {
      let at = 0
      return new RandomTaskIds((pool) => {
        for (let i = 0; i < pool.length; i++) pool[i] = bytes[at++ % bytes.length]!
      })
    }
    expect(source([0]).next()).toBe('A'.repeat(17))
    expect(source([247]).next()).toBe('9'.repeat(17))
    expect(source([255, 248, 61]).next()).toBe('9'.repeat(17))
    expect(source([62, 124, 186]).next()).toBe('A'.repeat(17))
    const ascending = source(Array.from({ length: 17 }, (_, i) => i)).next()
    expect(ascending).toBe(ALPHABET.slice(0, 17))
  })
})
