import { describe, expect, test } from 'bun:test'
import { TaskQueue } from '../../../src/tasks/priority-queue.ts'
import { FakeClock } from '../../support/fake-clock.ts'

/** promote_after: waiting this much longer counts as one class up. */
const PROMOTE_AFTER_MS = 5000
const POOLS = ['eu-west-1', 'europe', 'global']

describe('priority queue: the age rule', () => {
  test('high goes before normal before low when they arrive together; FIFO within a class', () => {
    const clock = new FakeClock()
    const queue = new TaskQueue<string>()
    for (const [name, priority] of [
      ['low-1', 'low'],
      ['normal-1', 'normal'],
      ['high-1', 'high'],
      ['normal-2', 'normal'],
    ] as const)
      queue.add(name, { pool: 'eu-west-1' }, priority, clock.monotonic(), PROMOTE_AFTER_MS)
    const order = Array.from({ length: 4 }, () => queue.next('gpu-1', POOLS)?.value)
    expect(order).toEqual(['high-1', 'normal-1', 'normal-2', 'low-1'])
    expect(queue.size).toBe(0)
  })

  test('a task that waited promote_after longer than a newcomer one class above goes first; one that waited less does not', () => {
    const clock = new FakeClock()
    const queue = new TaskQueue<string>()
    queue.add('old-normal', { pool: 'eu-west-1' }, 'normal', clock.monotonic(), PROMOTE_AFTER_MS)
    clock.advance(PROMOTE_AFTER_MS - 1)
    // Waited a millisecond less than promote_after: the high newcomer still goes first.
    queue.add('new-high', { pool: 'eu-west-1' }, 'high', clock.monotonic(), PROMOTE_AFTER_MS)
    expect(queue.next('gpu-1', POOLS)?.value).toBe('new-high')
    clock.advance(2)
    // Now it has waited past promote_after: it beats a newcomer of the class above.
    queue.add('newer-high', { pool: 'eu-west-1' }, 'high', clock.monotonic(), PROMOTE_AFTER_MS)
    expect(queue.next('gpu-1', POOLS)?.value).toBe('old-normal')
    expect(queue.next('gpu-1', POOLS)?.value).toBe('newer-high')
  })

  test('a low task is never starved for longer than two promote_after by a stream of high ones', () => {
    const clock = new FakeClock()
    const queue = new TaskQueue<string>()
    const enqueuedMs = clock.monotonic()
    queue.add('low', { pool: 'europe' }, 'low', enqueuedMs, PROMOTE_AFTER_MS)
    let servedAtMs: number | undefined
    // A high task arrives every 100 ms and a slot frees every 100 ms, for a minute.
    for (let tick = 0; tick < 600 && servedAtMs === undefined; tick++) {
      clock.advance(100)
      queue.add(`high-${tick}`, { pool: 'eu-west-1' }, 'high', clock.monotonic(), PROMOTE_AFTER_MS)
      if (queue.next('gpu-1', POOLS)?.value === 'low') servedAtMs = clock.monotonic() - enqueuedMs
    }
    expect(servedAtMs).toBeDefined()
    expect(servedAtMs!).toBeLessThanOrEqual(2 * PROMOTE_AFTER_MS + 100)
    expect(servedAtMs!).toBeGreaterThanOrEqual(2 * PROMOTE_AFTER_MS)
  })

  test('a task naming the agent competes by the same rank with the pools it serves; a removed task is never handed out', () => {
    const clock = new FakeClock()
    const queue = new TaskQueue<string>()
    const gone = queue.add('cancelled', { pool: 'global' }, 'high', clock.monotonic(), PROMOTE_AFTER_MS)
    queue.add('pool-normal', { pool: 'global' }, 'normal', clock.monotonic(), PROMOTE_AFTER_MS)
    clock.advance(10)
    queue.add('named-normal', { pool: 'eu-west-1', nodeId: 'gpu-1' }, 'normal', clock.monotonic(), PROMOTE_AFTER_MS)
    queue.remove(gone)
    expect(queue.next('gpu-2', POOLS)?.value).toBe('pool-normal')
    // Another agent never takes a task that names gpu-1.
    expect(queue.next('gpu-2', POOLS)).toBeUndefined()
    expect(queue.next('gpu-1', POOLS)?.value).toBe('named-normal')
  })
})
