import { describe, expect, test } from 'bun:test'
import { type Config, parseConfig } from '../../../src/config/config.ts'
import { healthPolicy, makeSettings } from '../../../src/config/settings.ts'
import { Registry, type RegistryEvent } from '../../../src/fleet/registry.ts'
import { AuthFailures } from '../../../src/security/auth-failures.ts'
import { Housekeeping, type HousekeepingDeps, housekeepingJobs } from '../../../src/server/housekeeping.ts'
import { FakeClock } from '../../support/fake-clock.ts'
import { SEED_CONFIG } from '../../support/helpers.ts'

/** The gateway's sweeps, recorded with the time each was given (a ping, which is given none, with the clock's). */
function fakeSockets(clock: FakeClock) {
  const calls: string[] = []
  return {
    calls,
    pingAll: () => void calls.push(`ping@${clock.now()}`),
    closeSilent: (nowMs: number) => void calls.push(`silent@${nowMs}`),
    closeUnregistered: (nowMs: number) => void calls.push(`unregistered@${nowMs}`),
  }
}

function housekeepingWorld(overrides: Record<string, unknown> = {}, options: { clock?: FakeClock; sockets?: HousekeepingDeps['sockets'] } = {}) {
  const clock = options.clock ?? new FakeClock()
  let config: Config = parseConfig({ ...SEED_CONFIG, ...overrides }, 'test').config
  const settings = makeSettings(config, { externalTokens: [], failures: new AuthFailures(() => clock.monotonic()) })
  const events: RegistryEvent[] = []
  /** Each state change as it happened (the client object lives on and changes). */
  const states: string[] = []
  const registry = new Registry(settings.regions, healthPolicy(config), (event) => {
    events.push(event)
    if (event.type === 'state') states.push(`${event.client.nodeId}:${event.client.state}`)
  })
  let flushes = 0
  const logs: string[] = []
  const seconds: number[] = []
  const housekeeping = new Housekeeping(
    clock,
    () =>
      housekeepingJobs({
        config: () => config,
        registry,
        sockets: options.sockets,
        flushFeed: () => void flushes++,
        everySecond: (nowMs) => void seconds.push(nowMs),
      }),
    (line) => void logs.push(line),
  )
  const join = (nodeId: string, protocol: 'http' | 'ws' = 'http') =>
    registry.announce({ holder: 'token-1', nodeId, region: 'us-east-1', protocol, ip: '127.0.0.1', port: 4000, weight: 1 }, clock.now()).client
  return {
    clock,
    registry,
    events,
    states,
    housekeeping,
    join,
    seconds,
    flushes: () => flushes,
    reconfigure: (next: Record<string, unknown>) => (config = parseConfig({ ...SEED_CONFIG, ...next }, 'reloaded').config),
  }
}

describe('housekeeping', () => {
  test('an HTTP client with no heartbeat for client_ttl is removed at the next sweep after it, not before', () => {
    const world = housekeepingWorld({ client_ttl: 10 })
    world.join('quiet')
    world.housekeeping.start()
    world.clock.advance(10_000)
    expect(world.registry.get('quiet')).toBeDefined()
    world.clock.advance(1000)
    expect(world.registry.get('quiet')).toBeUndefined()
    expect(world.events.at(-1)).toMatchObject({ type: 'left', reason: 'no heartbeat for 10 s' })
  })

  test('a heartbeat keeps an HTTP client; WebSocket clients are left to their sockets', () => {
    const world = housekeepingWorld({ client_ttl: 10 })
    world.join('beating')
    world.join('socket', 'ws')
    world.housekeeping.start()
    for (let second = 0; second < 30; second++) {
      world.clock.advance(1000)
      world.registry.touch('beating', world.clock.now())
    }
    expect(world.registry.get('beating')).toBeDefined()
    expect(world.registry.get('socket')).toBeDefined()
  })

  test('an ejected client goes on probation at the first sweep after its back-off ends', () => {
    const world = housekeepingWorld({ health: { failures_to_eject: 1, ejection_time: 5, max_ejection_time: 60, max_ejected_percent: 50 } })
    const sick = world.join('sick')
    world.join('well')
    world.registry.recordFailure(sick, world.clock.now())
    expect(sick.state).toBe('ejected')
    world.housekeeping.start()
    world.clock.advance(4999)
    expect(sick.state).toBe('ejected')
    world.clock.advance(1)
    expect(sick.state).toBe('probation')
    expect(world.states).toEqual(['sick:ejected', 'sick:probation'])
  })

  test('the monitor feed is flushed every 500 ms, the per-second look every second with the time', () => {
    const world = housekeepingWorld()
    world.housekeeping.start()
    world.clock.advance(2000)
    expect(world.flushes()).toBe(4)
    const startMs = world.clock.now() - 2000
    expect(world.seconds).toEqual([startMs + 1000, startMs + 2000])
  })

  test('with WebSocket on: unregistered sockets every second, pings every heartbeat_interval, silent sockets every connection_check_interval', () => {
    const clock = new FakeClock()
    const sockets = fakeSockets(clock)
    const world = housekeepingWorld({ ws: { ...SEED_CONFIG.ws, heartbeat_interval: 2, connection_check_interval: 3 } }, { clock, sockets })
    const startMs = world.clock.now()
    world.housekeeping.start()
    world.clock.advance(6000)
    const kind = (name: string) => sockets.calls.filter((call) => call.startsWith(`${name}@`)).map((call) => Number(call.split('@')[1]) - startMs)
    expect(kind('unregistered')).toEqual([1000, 2000, 3000, 4000, 5000, 6000])
    expect(kind('ping')).toEqual([2000, 4000, 6000])
    expect(kind('silent')).toEqual([3000, 6000])
  })

  test('with WebSocket off there are no pings and no silent-socket checks', () => {
    const clock = new FakeClock()
    const sockets = fakeSockets(clock)
    const world = housekeepingWorld({ ws: { ...SEED_CONFIG.ws, enabled: false } }, { clock, sockets })
    world.housekeeping.start()
    world.clock.advance(120_000)
    expect(sockets.calls.filter((call) => !call.startsWith('unregistered@'))).toEqual([])
  })

  test('every job is listed by name, from the config in force', () => {
    const names = (config: Config) =>
      housekeepingJobs({ config: () => config, registry: housekeepingWorld().registry, sockets: fakeSockets(new FakeClock()), flushFeed: () => {} })
    const on = parseConfig(SEED_CONFIG, 'on').config
    const off = parseConfig({ ...SEED_CONFIG, ws: { ...SEED_CONFIG.ws, enabled: false } }, 'off').config
    expect(names(on).map((job) => [job.name, job.everyMs])).toEqual([
      ['health and membership', 1000],
      ['monitor feed', 500],
      ['pings', 30_000],
      ['silent sockets', 60_000],
    ])
    expect(names(off).map((job) => job.name)).toEqual(['health and membership', 'monitor feed'])
  })

  test('start again (a reload) restarts the jobs with their new periods, and the old timers are gone', () => {
    const clock = new FakeClock()
    const sockets = fakeSockets(clock)
    const world = housekeepingWorld({ ws: { ...SEED_CONFIG.ws, heartbeat_interval: 30 } }, { clock, sockets })
    world.housekeeping.start()
    const timers = world.clock.pending
    world.clock.advance(10_000)
    world.reconfigure({ ws: { ...SEED_CONFIG.ws, heartbeat_interval: 4 } })
    world.housekeeping.start()
    expect(world.clock.pending).toBe(timers)
    // New period from the restart: pings at +4 s, +8 s ... +20 s; none at the old +30 s mark.
    world.clock.advance(21_000)
    expect(sockets.calls.filter((call) => call.startsWith('ping@'))).toHaveLength(5)
  })

  test('start again with the same periods keeps each timer: reloads more often than a period do not put its job off for ever', () => {
    const clock = new FakeClock()
    const sockets = fakeSockets(clock)
    const world = housekeepingWorld({ client_ttl: 1 }, { clock, sockets })
    world.join('quiet')
    const startMs = world.clock.now()
    world.housekeeping.start()
    const timers = world.clock.pending
    // A reload every 300 ms for 3 s, each with the same periods.
    for (let reload = 0; reload < 10; reload++) {
      world.clock.advance(300)
      world.reconfigure({ client_ttl: 1 })
      world.housekeeping.start()
    }
    expect(world.clock.pending).toBe(timers)
    // The membership job ran every second all along (and removed the silent client), the feed every 500 ms.
    expect(world.seconds.map((nowMs) => nowMs - startMs)).toEqual([1000, 2000, 3000])
    expect(world.flushes()).toBe(6)
    expect(world.registry.get('quiet')).toBeUndefined()
  })

  test("a kept timer runs the reloaded config's work: a new client_ttl applies at the job's next run", () => {
    const world = housekeepingWorld({ client_ttl: 60 })
    world.join('quiet')
    world.housekeeping.start()
    world.clock.advance(5500)
    expect(world.registry.get('quiet')).toBeDefined()
    world.reconfigure({ client_ttl: 5 })
    world.housekeeping.start()
    world.clock.advance(500)
    expect(world.events.at(-1)).toMatchObject({ type: 'left', reason: 'no heartbeat for 5 s' })
  })

  test('stop cancels every job', () => {
    const clock = new FakeClock()
    const sockets = fakeSockets(clock)
    const world = housekeepingWorld({ client_ttl: 1 }, { clock, sockets })
    world.join('quiet')
    world.housekeeping.start()
    expect(world.clock.pending).toBe(4)
    world.housekeeping.stop()
    expect(world.clock.pending).toBe(0)
    world.clock.advance(600_000)
    expect(sockets.calls).toEqual([])
    expect(world.flushes()).toBe(0)
    expect(world.registry.get('quiet')).toBeDefined()
  })
})
