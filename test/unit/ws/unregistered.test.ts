import { describe, expect, test } from 'bun:test'
import { Unregistered } from '../../../src/ws/unregistered.ts'

describe('unregistered sockets', () => {
  test('a socket is overdue once it has been open for the limit, not before, and is taken once', () => {
    const sockets = new Unregistered<string>()
    sockets.add('a', 1000)
    sockets.add('b', 1200)
    expect(sockets.takeOverdue(1999, 1000)).toEqual([])
    expect(sockets.takeOverdue(2000, 1000)).toEqual(['a'])
    expect(sockets.takeOverdue(2000, 1000)).toEqual([])
    expect(sockets.size).toBe(1)
    expect(sockets.takeOverdue(5000, 1000)).toEqual(['b'])
    expect(sockets.size).toBe(0)
  })

  test('a socket that registered or closed is never taken', () => {
    const sockets = new Unregistered<string>()
    sockets.add('registers', 0)
    sockets.add('idle', 10)
    sockets.add('closes', 20)
    sockets.delete('registers')
    sockets.delete('closes')
    expect(sockets.takeOverdue(10_000, 1000)).toEqual(['idle'])
  })

  test('a shorter limit (a reload) applies to the sockets already waiting, oldest first', () => {
    const sockets = new Unregistered<string>()
    for (const [name, openedAtMs] of [
      ['first', 0],
      ['second', 300],
      ['third', 600],
    ] as const)
      sockets.add(name, openedAtMs)
    expect(sockets.takeOverdue(700, 10_000)).toEqual([])
    expect(sockets.takeOverdue(700, 400)).toEqual(['first', 'second'])
    expect(sockets.size).toBe(1)
  })
})
