import { describe, expect, test } from 'bun:test'
import { Balancer } from '../../../src/fleet/balancer.ts'

/** The member `key` belongs to among `members`, as a registry's balancer picks it. */
function rendezvousPick(key: string, members: Array<[string, number]>, exclude?: ReadonlySet<string>): string | undefined {
  const balancer = new Balancer<string>()
  for (const [id, weight] of members) balancer.set(id, weight)
  return balancer.pickByKey(key, exclude)
}

const KEYS = Array.from({ length: 20_000 }, (_, i) => `user-${i}`)

function owners(members: Array<[string, number]>): Map<string, string> {
  const balancer = new Balancer<string>()
  for (const [id, weight] of members) balancer.set(id, weight)
  return new Map(KEYS.map((key) => [key, balancer.pickByKey(key)!]))
}

function equal(count: number): Array<[string, number]> {
  return Array.from({ length: count }, (_, i) => [`node-${i + 1}`, 1])
}

describe('weighted rendezvous hashing (Balancer.pickByKey)', () => {
  test('the same key goes to the same member, whatever the order the members are listed in', () => {
    const members = equal(5)
    const reversed = [...members].reverse()
    for (const key of KEYS.slice(0, 500)) expect(rendezvousPick(key, reversed)).toBe(rendezvousPick(key, members)!)
  })

  test('adding an eleventh equal member moves about 1/11 of the keys, every one of them to the newcomer', () => {
    const before = owners(equal(10))
    const after = owners(equal(11))
    const moved = KEYS.filter((key) => before.get(key) !== after.get(key))
    const share = moved.length / KEYS.length
    // 1/11 = 0.0909; 20 000 keys put the standard deviation near 0.002.
    expect(share).toBeGreaterThan(0.083)
    expect(share).toBeLessThan(0.099)
    expect(new Set(moved.map((key) => after.get(key)))).toEqual(new Set(['node-11']))
  })

  test('a member leaving moves only its own keys', () => {
    const before = owners(equal(10))
    const after = owners(equal(10).filter(([id]) => id !== 'node-4'))
    for (const key of KEYS) {
      if (before.get(key) === 'node-4') expect(after.get(key)).not.toBe('node-4')
      else expect(after.get(key)).toBe(before.get(key)!)
    }
  })

  test('equal members share the keys evenly', () => {
    const counts = new Map<string, number>()
    for (const owner of owners(equal(10)).values()) counts.set(owner, (counts.get(owner) ?? 0) + 1)
    for (const count of counts.values()) {
      expect(count).toBeGreaterThan(KEYS.length * 0.09)
      expect(count).toBeLessThan(KEYS.length * 0.11)
    }
  })

  test('weights 1:3 give shares of keys of about 1:3', () => {
    let heavy = 0
    for (const owner of owners([
      ['light', 1],
      ['heavy', 3],
    ]).values())
      if (owner === 'heavy') heavy++
    expect(heavy / KEYS.length).toBeGreaterThan(0.73)
    expect(heavy / KEYS.length).toBeLessThan(0.77)
  })

  test("excluding the key's owner gives the next in its order: the member that would own it if the owner left", () => {
    const members = equal(6)
    for (const key of KEYS.slice(0, 300)) {
      const first = rendezvousPick(key, members)!
      const next = rendezvousPick(key, members, new Set([first]))
      expect(next).toBe(
        rendezvousPick(
          key,
          members.filter(([id]) => id !== first),
        )!,
      )
      expect(next).not.toBe(first)
    }
  })

  test('a keyed pick leaves the round-robin sequence alone', () => {
    const balancer = new Balancer<string>()
    for (const [id, weight] of [
      ['a', 5],
      ['b', 1],
      ['c', 1],
    ] as const)
      balancer.set(id, weight)
    const sequence: string[] = []
    for (let i = 0; i < 7; i++) {
      balancer.pickByKey(`key-${i}`)
      sequence.push(balancer.pick()!)
    }
    expect(sequence).toEqual(['a', 'a', 'b', 'a', 'c', 'a', 'a'])
  })

  test('members of weight 0 and excluded members are never picked; none left gives undefined', () => {
    expect(rendezvousPick('k', [['drained', 0]])).toBeUndefined()
    expect(rendezvousPick('k', [['a', 1]], new Set(['a']))).toBeUndefined()
    expect(
      rendezvousPick('k', [
        ['a', 1],
        ['drained', 0],
      ]),
    ).toBe('a')
  })
})
