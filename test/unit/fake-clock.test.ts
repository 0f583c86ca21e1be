import { describe, expect, test } from 'bun:test'
import { FAKE_EPOCH_MS, FakeClock } from '../support/fake-clock.ts'

describe('fake clock', () => {
  test('starts at fixed times and moves only when advanced, wall and monotonic together', () => {
    const clock = new FakeClock()
    expect(clock.now()).toBe(FAKE_EPOCH_MS)
    expect(clock.monotonic()).toBe(1000)
    clock.advance(250)
    expect([clock.now(), clock.monotonic()]).toEqual([FAKE_EPOCH_MS + 250, 1250])
    expect(new FakeClock({ nowMs: 5, monotonicMs: 7 }).now()).toBe(5)
  })

  test('after runs once at its due time, not before', () => {
    const clock = new FakeClock()
    const ran: number[] = []
    clock.after(100, () => ran.push(clock.monotonic()))
    clock.advance(99)
    expect(ran).toEqual([])
    clock.advance(1)
    expect(ran).toEqual([1100])
    clock.advance(1000)
    expect(ran).toEqual([1100])
    expect(clock.pending).toBe(0)
  })

  test('every repeats at its period, each run at its own time', () => {
    const clock = new FakeClock({ monotonicMs: 0 })
    const ran: number[] = []
    clock.every(30, () => ran.push(clock.monotonic()))
    clock.advance(100)
    expect(ran).toEqual([30, 60, 90])
    expect(clock.monotonic()).toBe(100)
  })

  test('timers run in time order, ties in the order they were set, with the clock at each due time', () => {
    const clock = new FakeClock({ monotonicMs: 0 })
    const ran: string[] = []
    clock.after(50, () => ran.push(`late@${clock.monotonic()}`))
    clock.after(10, () => ran.push(`early@${clock.monotonic()}`))
    clock.after(10, () => ran.push(`tie@${clock.monotonic()}`))
    clock.every(20, () => ran.push(`tick@${clock.monotonic()}`))
    clock.advance(50)
    expect(ran).toEqual(['early@10', 'tie@10', 'tick@20', 'tick@40', 'late@50'])
  })

  test('a timer set by a job runs within the same advance when it falls due', () => {
    const clock = new FakeClock({ monotonicMs: 0 })
    const ran: number[] = []
    clock.after(10, () => {
      ran.push(clock.monotonic())
      clock.after(15, () => ran.push(clock.monotonic()))
      clock.after(100, () => ran.push(clock.monotonic()))
    })
    clock.advance(30)
    expect(ran).toEqual([10, 25])
    expect(clock.pending).toBe(1)
  })

  test('a cancelled timer never runs, even when cancelled by another job in the same advance', () => {
    const clock = new FakeClock({ monotonicMs: 0 })
    const ran: string[] = []
    const cancelOnce = clock.after(10, () => ran.push('once'))
    const cancelEvery = clock.every(10, () => ran.push('every'))
    cancelOnce()
    let cancelLater = () => {}
    clock.after(5, () => cancelLater())
    cancelLater = clock.after(6, () => ran.push('later'))
    clock.advance(15)
    expect(ran).toEqual(['every'])
    cancelEvery()
    clock.advance(100)
    expect(ran).toEqual(['every'])
    expect(clock.pending).toBe(0)
  })

  test('a negative delay runs at the next advance; a non-positive period or a step back is refused', () => {
    const clock = new FakeClock()
    let ran = false
    clock.after(-5, () => (ran = true))
    clock.advance(0)
    expect(ran).toBe(true)
    expect(() => clock.every(0, () => {})).toThrow(/positive period/)
    expect(() => clock.advance(-1)).toThrow(/cannot go back/)
  })
})
