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
  /** The members with these tasks in flight (each member carries its load, as a client record does). */
  function loaded(load: Record<string, number> = {}) {
    return [
      { id: 'slow', weight: 1, load: { inFlight: load.slow ?? 0 } },
      { id: 'fast', weight: 1, load: { inFlight: load.fast ?? 0 } },
      { id: 'big', weight: 4, load: { inFlight: load.big ?? 0 } },
    ]
  }

  test('of the two drawn, the one with fewer tasks in flight wins', () => {
    const members = loaded({ slow: 5, fast: 1, big: 0 })
    expect(pickLeastRequest(members, draws(3, 0, 1))).toBe('fast')
    expect(pickLeastRequest(members, draws(3, 1, 0))).toBe('fast')
  })

  test('load is per unit of weight: weight 4 with 3 in flight is less loaded than weight 1 with 1', () => {
    expect(pickLeastRequest(loaded({ slow: 1, fast: 1, big: 3 }), draws(3, 0, 2))).toBe('big')
  })

  test('a tie goes to the first drawn', () => {
    expect(pickLeastRequest(loaded(), draws(3, 1, 0))).toBe('fast')
  })

  test('the two drawn are different members: in a pool of two the less loaded always wins', () => {
    const pair = loaded({ slow: 3, fast: 0 }).slice(0, 2)
    for (const first of [0, 1]) expect(pickLeastRequest(pair, draws(2, first, 1 - first))).toBe('fast')
  })

  test('excluded members are drawn again, and a pool of only excluded ones gives nothing', () => {
    expect(pickLeastRequest(loaded({ slow: 0, fast: 9, big: 99 }), draws(3, 1, 2, [0, 0]), new Set(['slow']))).toBe('fast')
    expect(pickLeastRequest(loaded(), Math.random, new Set(['slow', 'fast', 'big']))).toBeUndefined()
  })

  test('the balancer keeps its members for the draws through removals and weight changes', () => {
    const balancer = new Balancer<string>()
    const b = { inFlight: 0 }
    balancer.set('a', 1, { inFlight: 0 })
    balancer.set('b', 1, b)
    balancer.set('c', 1, { inFlight: 0 })
    balancer.remove('a')
    balancer.set('b', 5, b)
    // Idle, b's weight 5 makes it the less loaded; with 100 in flight (read from its record, no lookup) it is not.
    expect(balancer.pickLeastLoaded(Math.random)).toBe('b')
    b.inFlight = 100
    expect(balancer.pickLeastLoaded(Math.random)).toBe('c')
    balancer.remove('b')
    balancer.remove('c')
    expect(balancer.pickLeastLoaded(Math.random)).toBeUndefined()
  })
})
