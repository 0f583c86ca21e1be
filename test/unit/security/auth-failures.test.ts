import { describe, expect, test } from 'bun:test'
import { AuthFailures, addressKey } from '../../../src/security/auth-failures.ts'

/** A clock the test moves by hand (monotonic ms). */
function fakeClock(startMs = 1_000_000) {
  let nowMs = startMs
  return {
    now: () => nowMs,
    advance: (ms: number) => {
      nowMs += ms
    },
  }
}

const LIMITS = { maxFailures: 3, windowMs: 60_000 }

describe('failed authentications in a sliding window', () => {
  test('max_failures failures are answered as usual; the next gets the seconds until the oldest leaves the window', () => {
    const clock = fakeClock()
    const failures = new AuthFailures(clock.now)
    expect(failures.fail('10.0.0.1', LIMITS)).toBe(0)
    clock.advance(10_000)
    expect(failures.fail('10.0.0.1', LIMITS)).toBe(0)
    clock.advance(10_000)
    expect(failures.fail('10.0.0.1', LIMITS)).toBe(0)
    // 20 s after the first failure: it leaves the window in 40 s.
    expect(failures.fail('10.0.0.1', LIMITS)).toBe(40)
    clock.advance(500)
    expect(failures.fail('10.0.0.1', LIMITS)).toBe(40)
    expect({ failures: failures.failures, throttled: failures.throttled }).toEqual({ failures: 5, throttled: 2 })
  })

  test('a throttled failure does not enter the window: once the oldest leaves it, one more failure is answered as usual', () => {
    const clock = fakeClock()
    const failures = new AuthFailures(clock.now)
    for (let i = 0; i < 3; i++) {
      failures.fail('10.0.0.1', LIMITS)
      clock.advance(10_000)
    }
    // At 30 s; the failures at 0, 10 and 20 s fill the window.
    for (let i = 0; i < 1000; i++) expect(failures.fail('10.0.0.1', LIMITS)).toBe(30)
    clock.advance(29_999)
    expect(failures.fail('10.0.0.1', LIMITS)).toBe(1)
    clock.advance(1)
    expect(failures.fail('10.0.0.1', LIMITS)).toBe(0)
    // At 60 s the window holds 10, 20 and 60 s: throttled until 10 s leaves it.
    expect(failures.fail('10.0.0.1', LIMITS)).toBe(10)
  })

  test('addresses are counted apart', () => {
    const clock = fakeClock()
    const failures = new AuthFailures(clock.now)
    for (let i = 0; i < 3; i++) failures.fail('10.0.0.1', LIMITS)
    expect(failures.fail('10.0.0.1', LIMITS)).toBeGreaterThan(0)
    expect(failures.fail('10.0.0.2', LIMITS)).toBe(0)
  })

  test('a lower limit after a reload applies to the failures already counted', () => {
    const clock = fakeClock()
    const failures = new AuthFailures(clock.now)
    for (let i = 0; i < 3; i++) {
      failures.fail('10.0.0.1', LIMITS)
      clock.advance(1000)
    }
    // At 3 s, the failures at 0, 1 and 2 s in the window and one allowed: all three must leave it, the last at 62 s.
    expect(failures.fail('10.0.0.1', { maxFailures: 1, windowMs: 60_000 })).toBe(59)
  })

  test('addresses whose failures all left the window are forgotten', () => {
    const clock = fakeClock()
    const failures = new AuthFailures(clock.now)
    for (let i = 0; i < 100; i++) failures.fail(`10.0.${i}.1`, LIMITS)
    expect(failures.tracked).toBe(100)
    clock.advance(30_000)
    failures.fail('10.0.0.1', LIMITS)
    expect(failures.tracked).toBe(100)
    clock.advance(30_000)
    failures.fail('10.9.9.9', LIMITS)
    // 10.0.0.1 failed again 30 s ago; the other 99 are gone.
    expect(failures.tracked).toBe(2)
  })

  test('past the cap on tracked addresses, new ones share one slot, so spreading guesses over addresses does not help', () => {
    const clock = fakeClock()
    const failures = new AuthFailures(clock.now, 4)
    for (let i = 0; i < 4; i++) failures.fail(`10.0.0.${i}`, LIMITS)
    expect(failures.tracked).toBe(4)
    const answers = Array.from({ length: 5 }, (_, i) => failures.fail(`192.168.0.${i}`, LIMITS))
    expect(answers).toEqual([0, 0, 0, 60, 60])
    expect(failures.tracked).toBe(4)
    // Tracked addresses keep their own count.
    expect(failures.fail('10.0.0.0', LIMITS)).toBe(0)
    // Once the tracked ones leave the window, a new address gets a slot of its own again.
    clock.advance(60_000)
    expect(failures.fail('172.16.0.1', LIMITS)).toBe(0)
    expect(failures.tracked).toBe(1)
  })
})

describe('the key an address is counted under', () => {
  test('IPv4 as it is; IPv4-mapped IPv6 as its IPv4 address', () => {
    expect(addressKey('203.0.113.7')).toBe('203.0.113.7')
    expect(addressKey('::ffff:203.0.113.7')).toBe('203.0.113.7')
    expect(addressKey('::FFFF:127.0.0.1')).toBe('127.0.0.1')
  })

  test('IPv6 by its /64 network, however it is written', () => {
    expect(addressKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:db8:1:2::99')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:0DB8:0001:0002:ffff::1')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64')
    expect(addressKey('::1')).toBe('0:0:0:0::/64')
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64')
    expect(addressKey('64:ff9b::192.0.2.1')).toBe('64:ff9b:0:0::/64')
  })

  test('two hosts of one /64 share a count', () => {
    const clock = fakeClock()
    const failures = new AuthFailures(clock.now)
    failures.fail('2001:db8:1:2::a', LIMITS)
    failures.fail('2001:db8:1:2::b', LIMITS)
    failures.fail('2001:db8:1:2:ffff:ffff:ffff:ffff', LIMITS)
    expect(failures.fail('2001:db8:1:2::c', LIMITS)).toBe(60)
    expect(failures.fail('2001:db8:1:3::a', LIMITS)).toBe(0)
  })
})
