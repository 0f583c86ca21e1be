import { describe, expect, test } from 'bun:test'
import { OpenSockets } from '../../../src/ws/open-sockets.ts'

const socket = (name: string) => ({ name, data: { openAt: -1 } })

describe('open sockets', () => {
  test('adds, removes and tells which are open, as a Set does; adding or removing twice changes nothing', () => {
    const open = new OpenSockets<ReturnType<typeof socket>>()
    const [a, b, c] = [socket('a'), socket('b'), socket('c')]
    open.add(a)
    open.add(b)
    open.add(c)
    open.add(b)
    expect(open.size).toBe(3)
    open.delete(a)
    open.delete(a)
    expect(open.size).toBe(2)
    expect([open.has(a), open.has(b), open.has(c)]).toEqual([false, true, true])
    expect([...open].map((s) => s.name).sort()).toEqual(['b', 'c'])
    // Another list's socket at the same place is not this list's.
    const other = new OpenSockets<ReturnType<typeof socket>>()
    const d = socket('d')
    other.add(d)
    expect(open.has(d)).toBe(false)
    open.delete(d)
    expect(other.has(d)).toBe(true)
    expect(open.size).toBe(2)
  })

  test('a walk may remove the socket it is at (a terminate closes at once): every socket is still visited', () => {
    const open = new OpenSockets<ReturnType<typeof socket>>()
    const all = Array.from({ length: 10 }, (_, i) => socket(`s${i}`))
    for (const s of all) open.add(s)
    const visited: string[] = []
    for (const s of open) {
      visited.push(s.name)
      if (Number(s.name.slice(1)) % 2 === 0) open.delete(s)
    }
    expect(visited.sort()).toEqual(all.map((s) => s.name).sort())
    expect([...open].map((s) => s.name).sort()).toEqual(['s1', 's3', 's5', 's7', 's9'])
  })
})
