import { describe, expect, test } from 'bun:test'
import { type Deadline, DeadlineQueue, type Expirable } from '../../../src/tasks/deadlines.ts'

/** A watcher that writes down when it was told. */
function recorder(log: string[], name: string): Expirable {
  return { expire: () => log.push(name) }
}

function watched(queue: DeadlineQueue, log: string[], name: string, timeoutMs: number, nowMs: number): Deadline {
  const deadline = queue.add(timeoutMs, nowMs)
  deadline.watch(recorder(log, name))
  return deadline
}

describe('deadline queue', () => {
  test('fires what is due, earliest first, and nothing early', () => {
    const queue = new DeadlineQueue()
    const log: string[] = []
    watched(queue, log, 'a', 100, 0)
    watched(queue, log, 'b', 100, 10)
    watched(queue, log, 'c', 100, 20)
    queue.expireDue(99)
    expect(log).toEqual([])
    queue.expireDue(110)
    expect(log).toEqual(['a', 'b'])
    expect(queue.size).toBe(1)
    expect(queue.earliestMs).toBe(120)
  })

  test('a removed deadline never fires, from the head, the middle or the tail', () => {
    const queue = new DeadlineQueue()
    const log: string[] = []
    const deadlines = ['a', 'b', 'c', 'd', 'e'].map((name, i) => watched(queue, log, name, 100, i))
    for (const i of [0, 2, 4]) queue.remove(deadlines[i]!)
    queue.remove(deadlines[2]!)
    expect(queue.size).toBe(2)
    queue.expireDue(1000)
    expect(log).toEqual(['b', 'd'])
    expect(queue.size).toBe(0)
    expect(queue.earliestMs).toBeUndefined()
  })

  test('a shorter timeout after a reload still fires in time order', () => {
    const queue = new DeadlineQueue()
    const log: string[] = []
    watched(queue, log, 'long-1', 30_000, 0)
    watched(queue, log, 'long-2', 30_000, 5)
    watched(queue, log, 'short', 1_000, 10)
    watched(queue, log, 'shortest', 500, 10)
    expect(queue.earliestMs).toBe(510)
    queue.expireDue(2_000)
    expect(log).toEqual(['shortest', 'short'])
    queue.expireDue(30_005)
    expect(log).toEqual(['shortest', 'short', 'long-1', 'long-2'])
  })

  test('a watcher that ends its task while firing does not disturb the queue', () => {
    const queue = new DeadlineQueue()
    const log: string[] = []
    const first: Deadline = queue.add(10, 0)
    first.watch({ expire: () => queue.remove(first) })
    watched(queue, log, 'second', 10, 0)
    queue.expireDue(10)
    expect(first.expired).toBe(true)
    expect(log).toEqual(['second'])
    expect(queue.size).toBe(0)
  })

  test('every watcher is told once; one that unwatched is not', () => {
    const queue = new DeadlineQueue()
    const log: string[] = []
    const deadline = queue.add(10, 0)
    const gone = recorder(log, 'gone')
    for (const watcher of [recorder(log, 'one'), gone, recorder(log, 'three')]) deadline.watch(watcher)
    deadline.unwatch(gone)
    queue.expireDue(10)
    deadline.fire()
    expect(log).toEqual(['one', 'three'])
  })

  test('expireAll fires everything at once, whatever its time', () => {
    const queue = new DeadlineQueue()
    const log: string[] = []
    watched(queue, log, 'a', 60_000, 0)
    watched(queue, log, 'b', 1, 0)
    queue.expireAll()
    expect(log).toEqual(['b', 'a'])
    expect(queue.size).toBe(0)
  })
})
