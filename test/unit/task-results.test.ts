import { describe, expect, test } from 'bun:test'
import { MemoryTaskResults } from '../../src/task-results.ts'
import { FakeClock } from '../fake-clock.ts'

describe('memory task results', () => {
  test('a result lives exactly its TTL', () => {
    const clock = new FakeClock()
    const results = new MemoryTaskResults<string>(1000, 10)
    results.put('t-1', 'done', clock.now())
    clock.advance(999)
    expect(results.get('t-1', clock.now())).toBe('done')
    clock.advance(1)
    expect(results.get('t-1', clock.now())).toBeUndefined()
    expect(results.size).toBe(0)
    // Expired is not evicted.
    expect(results.evicted).toBe(0)
  })

  test('an unknown id is undefined', () => {
    expect(new MemoryTaskResults<string>(1000, 10).get('nope', 0)).toBeUndefined()
  })

  test('past the bound the oldest go first, and each is counted as evicted', () => {
    const clock = new FakeClock()
    const results = new MemoryTaskResults<number>(60_000, 2)
    for (const [at, id] of ['a', 'b', 'c', 'd'].entries()) {
      results.put(id, at, clock.now())
      clock.advance(10)
    }
    expect(results.size).toBe(2)
    expect(results.evicted).toBe(2)
    expect(['a', 'b', 'c', 'd'].map((id) => results.get(id, clock.now()))).toEqual([undefined, undefined, 2, 3])
  })

  test('results expired by the time of a put are dropped, not evicted', () => {
    const clock = new FakeClock()
    const results = new MemoryTaskResults<string>(100, 2)
    results.put('old-1', 'x', clock.now())
    results.put('old-2', 'y', clock.now())
    clock.advance(100)
    results.put('new', 'z', clock.now())
    expect(results.size).toBe(1)
    expect(results.evicted).toBe(0)
  })

  test('putting a known id again replaces it, restarts its TTL and makes it the newest', () => {
    const clock = new FakeClock()
    const results = new MemoryTaskResults<string>(1000, 2)
    results.put('a', 'pending', clock.now())
    results.put('b', 'pending', clock.now())
    clock.advance(500)
    results.put('a', 'done', clock.now())
    results.put('c', 'pending', clock.now())
    // b, not a, was the oldest.
    expect(results.get('b', clock.now())).toBeUndefined()
    expect(results.evicted).toBe(1)
    clock.advance(999)
    expect(results.get('a', clock.now())).toBe('done')
  })

  test('delete forgets a result; deleting an unknown id does nothing', () => {
    const results = new MemoryTaskResults<string>(1000, 10)
    results.put('a', 'x', 0)
    results.put('b', 'y', 0)
    results.delete('a')
    results.delete('never')
    expect(results.get('a', 1)).toBeUndefined()
    expect(results.get('b', 1)).toBe('y')
    expect(results.size).toBe(1)
    expect(results.evicted).toBe(0)
  })
})
