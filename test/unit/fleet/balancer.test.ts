import { describe, expect, test } from 'bun:test'
import { Balancer } from '../../../src/fleet/balancer.ts'

function picks(balancer: Balancer<string>, count: number, exclude?: ReadonlySet<string>): string[] {
  return Array.from({ length: count }, () => balancer.pick(exclude) ?? '-')
}

/** nginx's smooth weighted round-robin, O(n) per pick: the reference our heap version must match. */
function reference(weights: Array<[string, number]>, count: number): string[] {
  const current = new Map(weights.map(([id]) => [id, 0]))
  const total = weights.reduce((sum, [, weight]) => sum + weight, 0)
  const out: string[] = []
  for (let i = 0; i < count; i++) {
    let best: string | undefined
    for (const [id, weight] of weights) {
      current.set(id, current.get(id)! + weight)
      if (best === undefined || current.get(id)! > current.get(best)!) best = id
    }
    current.set(best!, current.get(best!)! - total)
    out.push(best!)
  }
  return out
}

describe('balancer', () => {
  test('weights 5:1:1 give a a b a c a a', () => {
    const balancer = new Balancer<string>()
    balancer.set('a', 5)
    balancer.set('b', 1)
    balancer.set('c', 1)
    expect(picks(balancer, 7)).toEqual(['a', 'a', 'b', 'a', 'c', 'a', 'a'])
    expect(picks(balancer, 7)).toEqual(['a', 'a', 'b', 'a', 'c', 'a', 'a'])
  })

  test('equal weights rotate in the order members were added', () => {
    const balancer = new Balancer<string>()
    for (const id of ['x', 'y', 'z']) balancer.set(id, 1)
    expect(picks(balancer, 6)).toEqual(['x', 'y', 'z', 'x', 'y', 'z'])
  })

  test('matches the nginx reference exactly for mixed weights', () => {
    const weights: Array<[string, number]> = [
      ['a', 3],
      ['b', 7],
      ['c', 1],
      ['d', 7],
      ['e', 2],
      ['f', 3],
      ['g', 10],
    ]
    const balancer = new Balancer<string>()
    for (const [id, weight] of weights) balancer.set(id, weight)
    expect(picks(balancer, 500)).toEqual(reference(weights, 500))
  })

  test('each member gets exactly its share over a full cycle', () => {
    const balancer = new Balancer<string>()
    balancer.set('a', 4)
    balancer.set('b', 2)
    balancer.set('c', 1)
    const counts = new Map<string, number>()
    for (const id of picks(balancer, 70)) counts.set(id, (counts.get(id) ?? 0) + 1)
    expect(Object.fromEntries(counts)).toEqual({ a: 40, b: 20, c: 10 })
  })

  test('weight 0 drains a member and an empty balancer picks nothing', () => {
    const balancer = new Balancer<string>()
    expect(balancer.pick()).toBeUndefined()
    balancer.set('a', 0)
    expect(balancer.size).toBe(0)
    balancer.set('a', 1)
    balancer.set('b', 1)
    balancer.set('a', 0)
    expect(picks(balancer, 3)).toEqual(['b', 'b', 'b'])
    balancer.remove('b')
    expect(balancer.pick()).toBeUndefined()
  })

  test('exclusion skips members without disturbing the rotation of the rest', () => {
    const balancer = new Balancer<string>()
    for (const id of ['a', 'b', 'c']) balancer.set(id, 1)
    expect(balancer.pick(new Set(['a']))).toBe('b')
    expect(balancer.pick(new Set(['a', 'b', 'c']))).toBeUndefined()
    // a was skipped, not charged: it is still owed its turn.
    expect(picks(balancer, 3)).toEqual(['a', 'c', 'a'])
  })

  test('changing a weight keeps the member and its new share applies', () => {
    const balancer = new Balancer<string>()
    balancer.set('a', 1)
    balancer.set('b', 1)
    balancer.set('b', 3)
    expect(balancer.weightOf('b')).toBe(3)
    const counts = new Map<string, number>()
    for (const id of picks(balancer, 400)) counts.set(id, (counts.get(id) ?? 0) + 1)
    expect(counts.get('b')! / counts.get('a')!).toBeCloseTo(3, 1)
  })

  test('stays smooth with 100 000 members of mixed weights', () => {
    const balancer = new Balancer<number>()
    for (let id = 0; id < 100_000; id++) balancer.set(id, (id % 5) + 1)
    // Total weight is 300 000: over that many picks every member gets exactly its weight.
    const counts = new Uint32Array(100_000)
    for (let i = 0; i < 300_000; i++) counts[balancer.pick()!]!++
    for (let id = 0; id < 100_000; id += 997) expect(counts[id]).toBe((id % 5) + 1)
  })

  test('removing a member mid-rotation never picks it again and the rest share evenly', () => {
    const balancer = new Balancer<string>()
    for (const id of ['a', 'b', 'c', 'd']) balancer.set(id, 1)
    expect(picks(balancer, 2)).toEqual(['a', 'b'])
    balancer.remove('c')
    const after = picks(balancer, 30)
    expect(after).not.toContain('c')
    for (const id of ['a', 'b', 'd']) expect(Math.abs(after.filter((x) => x === id).length - 10)).toBeLessThanOrEqual(1)
  })

  test('members held by their holder (join, reweigh, leave) rotate as set and remove do; leaving twice, or another balancer, changes nothing', () => {
    const byId = new Balancer<string>()
    const held = new Balancer<string>()
    const other = new Balancer<string>()
    byId.set('a', 5)
    byId.set('b', 1)
    byId.set('c', 1)
    const a = held.join('a', 5)
    held.join('b', 1)
    const c = held.join('c', 1)
    const stranger = other.join('a', 1)
    expect(picks(held, 7)).toEqual(picks(byId, 7))
    byId.set('a', 2)
    held.reweigh(a, 2)
    expect(picks(held, 9)).toEqual(picks(byId, 9))
    byId.remove('c')
    held.leave(c)
    held.leave(c)
    held.leave(stranger)
    expect(held.size).toBe(2)
    expect(picks(held, 6)).toEqual(picks(byId, 6))
    expect(picks(held, 6)).not.toContain('c')
    expect(other.size).toBe(1)
    // The id API knows only what it added: these members have no entry by id.
    expect(held.has('a')).toBe(false)
  })
})
