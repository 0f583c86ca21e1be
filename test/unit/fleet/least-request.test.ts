import { describe, expect, test } from 'bun:test'
import { Balancer } from '../../../src/fleet/balancer.ts'
import { pickLeastRequest } from '../../../src/fleet/least-request.ts'

/**
 * Draws of `count` members that land on `first`, then `second` (a different member: the second draw
 * is among the other count - 1). `excluded` draws of the first come before it.
 */
function draws(count: number, first: number, second: number, excluded: number[] = []): () => number {
  const values = [...excluded, first].map((at) => (at + 0.5) / count)
  values.push(((second > first ? second - 1 : second) + 0.5) / (count - 1))
  let at = 0
  return () => values[at++]!
}

describe('least-request (power of two choices)', () => {
  const members = [
    { id: 'slow', weight: 1 },
    { id: 'fast', weight: 1 },
    { id: 'big', weight: 4 },
  ]

  test('of the two drawn, the one with fewer tasks in flight wins', () => {
    const load = { slow: 5, fast: 1, big: 0 } as Record<string, number>
    expect(pickLeastRequest(members, (id) => load[id]!, draws(3, 0, 1))).toBe('fast')
    expect(pickLeastRequest(members, (id) => load[id]!, draws(3, 1, 0))).toBe('fast')
  })

  test('load is per unit of weight: weight 4 with 3 in flight is less loaded than weight 1 with 1', () => {
    const load = { slow: 1, fast: 1, big: 3 } as Record<string, number>
    expect(pickLeastRequest(members, (id) => load[id]!, draws(3, 0, 2))).toBe('big')
  })

  test('a tie goes to the first drawn', () => {
    expect(pickLeastRequest(members, () => 0, draws(3, 1, 0))).toBe('fast')
  })

  test('the two drawn are different members: in a pool of two the less loaded always wins', () => {
    const pair = members.slice(0, 2)
    const load = { slow: 3, fast: 0 } as Record<string, number>
    for (const first of [0, 1]) expect(pickLeastRequest(pair, (id) => load[id]!, draws(2, first, 1 - first))).toBe('fast')
  })

  test('excluded members are drawn again, and a pool of only excluded ones gives nothing', () => {
    const load = { slow: 0, fast: 9, big: 99 } as Record<string, number>
    expect(pickLeastRequest(members, (id) => load[id]!, draws(3, 1, 2, [0, 0]), new Set(['slow']))).toBe('fast')
    expect(pickLeastRequest(members, () => 0, Math.random, new Set(['slow', 'fast', 'big']))).toBeUndefined()
  })

  test('the balancer keeps its members for the draws through removals and weight changes', () => {
    const balancer = new Balancer<string>()
    balancer.set('a', 1)
    balancer.set('b', 1)
    balancer.set('c', 1)
    balancer.remove('a')
    balancer.set('b', 5)
    // Idle, b's weight 5 makes it the less loaded; with 100 in flight it is not.
    expect(balancer.pickLeastLoaded(() => 0, Math.random)).toBe('b')
    expect(balancer.pickLeastLoaded((id) => (id === 'b' ? 100 : 0), Math.random)).toBe('c')
    balancer.remove('b')
    balancer.remove('c')
    expect(balancer.pickLeastLoaded(() => 0, Math.random)).toBeUndefined()
  })
})
