import { describe, expect, test } from 'bun:test'
import { parseConfig, SEED_HIERARCHY } from '../../../src/config/config.ts'
import { Regions } from '../../../src/fleet/regions.ts'
import { clientView, Registry } from '../../../src/fleet/registry.ts'
import { rampFactor } from '../../../src/fleet/slow-start.ts'
import { Housekeeping, housekeepingJobs } from '../../../src/server/housekeeping.ts'
import { FakeClock } from '../../support/fake-clock.ts'
import { TEST_POLICY } from '../../support/fake-transport.ts'

describe('slow start: the ramp', () => {
  test('10 % at the start, linear in steps of 5 %, never above the line, 100 % at the end and after', () => {
    const factors = [0, 1, 5, 10, 50, 55.5, 99, 100, 500].map((elapsedS) => rampFactor(elapsedS * 1000, 100_000))
    // 0.1 + 0.9 * t/100: 0.1, 0.109, 0.145, 0.19, 0.55, 0.5995, 0.991, 1, 1 — floored to twentieths.
    expect(factors).toEqual([0.1, 0.1, 0.1, 0.15, 0.55, 0.55, 0.95, 1, 1])
  })

  test('without slow start a client has its whole weight at once', () => {
    expect(rampFactor(0, 0)).toBe(1)
  })
})

const SLOW_START_S = 100

/** A registry whose ramps advance on the fake clock through the server's own housekeeping job. */
function rampingFleet() {
  const clock = new FakeClock()
  const config = parseConfig({ region_hierarchy: SEED_HIERARCHY, health: { slow_start: SLOW_START_S } }, 'test').config
  const registry = new Registry(new Regions(SEED_HIERARCHY), { ...TEST_POLICY, slowStartMs: SLOW_START_S * 1000 })
  const housekeeping = new Housekeeping(
    clock,
    () => housekeepingJobs({ config: () => config, registry, flushFeed: () => {} }),
    () => {},
  )
  housekeeping.start()
  // WebSocket clients: the housekeeping job would expire HTTP clients that send no heartbeat for client_ttl.
  const join = (nodeId: string) =>
    registry.announce({ holder: 'h', nodeId, region: 'us-east-1', protocol: 'ws', ip: '127.0.0.1', port: 4000, weight: 1 }, clock.now(), 1).client
  /** How many of `count` picks for us-east-1 went to `nodeId`. */
  const share = (nodeId: string, count: number) => {
    let got = 0
    for (let i = 0; i < count; i++) if (registry.pick('us-east-1')?.client.nodeId === nodeId) got++
    return got
  }
  return { clock, registry, join, share, stop: () => housekeeping.stop() }
}

describe('slow start: shares over time', () => {
  test('a newcomer beside a warm client gets 10 %, then its ramp, then an equal share', () => {
    const fleet = rampingFleet()
    fleet.join('warm')
    fleet.clock.advance(SLOW_START_S * 1000)
    fleet.join('cold')
    // Effective weights 1 and 0.1: the cold client gets 1 pick in 11.
    expect(fleet.share('cold', 1100)).toBe(100)
    fleet.clock.advance(50_000)
    // Half-way: 0.55 of its weight, 0.55/1.55 of the picks.
    expect(Math.abs(fleet.share('cold', 3100) - 1100)).toBeLessThanOrEqual(1)
    fleet.clock.advance(50_000)
    expect(fleet.share('cold', 1000)).toBe(500)
    fleet.stop()
  })

  test('/clients shows the effective weight while the client ramps, and only then', () => {
    const fleet = rampingFleet()
    const cold = fleet.join('cold')
    expect(clientView(cold).effective_weight).toBe(0.1)
    fleet.clock.advance(50_000)
    expect(clientView(cold).effective_weight).toBe(0.55)
    fleet.clock.advance(50_000)
    expect(clientView(cold).effective_weight).toBeUndefined()
    expect(clientView(cold).weight).toBe(1)
    fleet.stop()
  })

  test('a client back from an ejection ramps again from 10 % once it passes its trial', () => {
    const fleet = rampingFleet()
    fleet.join('warm')
    const flaky = fleet.join('flaky')
    fleet.clock.advance(SLOW_START_S * 1000)
    for (let i = 0; i < 3; i++) fleet.registry.recordFailure(flaky, fleet.clock.now(), 'usa')
    expect(flaky.state).toBe('ejected')
    fleet.clock.advance(TEST_POLICY.ejectionMs)
    expect(flaky.state).toBe('probation')
    fleet.registry.beginAttempt(flaky)
    fleet.registry.recordSuccess(flaky, 5, fleet.clock.now())
    expect(flaky.state).toBe('healthy')
    expect(clientView(flaky).effective_weight).toBe(0.1)
    expect(fleet.share('flaky', 1100)).toBe(100)
    fleet.stop()
  })
})
