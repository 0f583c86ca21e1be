import { describe, expect, test } from 'bun:test'
import { SEED_HIERARCHY } from '../../../src/config/config.ts'
import { Regions } from '../../../src/fleet/regions.ts'
import { type ClientAnnouncement, type HealthPolicy, Registry, type RegistryEvent } from '../../../src/fleet/registry.ts'

const POLICY: HealthPolicy = { failuresToEject: 3, ejectionMs: 1000, maxEjectionMs: 8000, maxEjectedPercent: 50 }

function client(nodeId: string, region: string, extra: Partial<ClientAnnouncement> = {}): ClientAnnouncement {
  return { holder: 'token-1', nodeId, region, protocol: 'http', ip: '127.0.0.1', port: 4000, weight: 1, ...extra }
}

function setup(policy = POLICY) {
  const events: RegistryEvent[] = []
  /** Each state change as "node:state", captured when it happened (the client object lives on). */
  const states: string[] = []
  const registry = new Registry(new Regions(SEED_HIERARCHY), policy, (event) => {
    events.push(event)
    if (event.type === 'state') states.push(`${event.client.nodeId}:${event.client.state}`)
  })
  return { registry, events, states }
}

/** What the dispatcher does for each attempt: pick, then begin the attempt (the trial, for a client on probation). */
function pickForTask(registry: Registry, region: string) {
  const picked = registry.pick(region)
  if (picked) registry.beginAttempt(picked.client)
  return picked?.client
}

function failTimes(registry: Registry, nodeId: string, times: number, now: number) {
  for (let i = 0; i < times; i++) registry.recordFailure(registry.get(nodeId)!, now)
}

describe('registry', () => {
  test('picks from the region, then climbs the hierarchy when it has no client', () => {
    const { registry } = setup()
    registry.announce(client('east', 'us-east-1'), 0)
    registry.announce(client('eu', 'eu-west-1'), 0)
    expect(pickForTask(registry, 'us-east-1')?.nodeId).toBe('east')
    expect(pickForTask(registry, 'usa')?.nodeId).toBe('east')
    // us-west-1 has no client: usa has one.
    expect(pickForTask(registry, 'us-west-1')?.nodeId).toBe('east')
    // singapore has none, asia has none, global has both.
    expect(new Set([pickForTask(registry, 'singapore')?.nodeId, pickForTask(registry, 'singapore')?.nodeId])).toEqual(new Set(['east', 'eu']))
  })

  test('a heartbeat from the same address refreshes; a changed region moves the client', () => {
    const { registry, events } = setup()
    registry.announce(client('a', 'us-east-1'), 0)
    registry.announce(client('a', 'us-east-1'), 50)
    expect(registry.get('a')!.lastSeen).toBe(50)
    expect(events.map((event) => event.type)).toEqual(['joined'])
    registry.announce(client('a', 'eu-west-1'), 60)
    expect(pickForTask(registry, 'us-east-1')?.nodeId).toBe('a') // only via global fallback now
    expect(registry.within('usa')).toEqual([])
    expect(registry.within('europe').map((c) => c.nodeId)).toEqual(['a'])
    expect(events.map((event) => event.type)).toEqual(['joined', 'updated'])
  })

  test('a WebSocket node on a new connection replaces the record; the old connection cannot remove it', () => {
    const { registry } = setup()
    const first = registry.announce(client('w', 'usa', { protocol: 'ws' }), 0).client
    const second = registry.announce(client('w', 'usa', { protocol: 'ws' }), 10)
    expect(second.previous?.connectionId).toBe(first.connectionId)
    expect(second.client.connectionId).not.toBe(first.connectionId)
    expect(registry.remove('w', 'old socket closed', first.connectionId)).toBeUndefined()
    expect(registry.get('w')).toBeDefined()
    // Refreshing over the current connection keeps it.
    expect(registry.announce(client('w', 'usa', { protocol: 'ws' }), 20, second.client.connectionId).previous).toBeUndefined()
  })

  test('weight 0 drains: the client stays registered but gets no tasks', () => {
    const { registry } = setup()
    registry.announce(client('a', 'usa'), 0)
    registry.announce(client('b', 'usa', { port: 4001 }), 0)
    registry.setWeight('a', 0)
    expect([pickForTask(registry, 'usa')?.nodeId, pickForTask(registry, 'usa')?.nodeId]).toEqual(['b', 'b'])
    expect(registry.regionCounts().get('usa')).toEqual({ clients: 2, active: 1, failing: 0 })
  })

  test('consecutive failures eject; a success in between resets the count; 4xx-style successes do not count', () => {
    const { registry } = setup()
    for (const id of ['a', 'b', 'c', 'd']) registry.announce(client(id, 'usa', { port: 4000 + id.charCodeAt(0) }), 0)
    failTimes(registry, 'a', 2, 0)
    registry.recordSuccess(registry.get('a')!, 5, 0)
    failTimes(registry, 'a', 2, 0)
    expect(registry.get('a')!.state).toBe('healthy')
    failTimes(registry, 'a', 1, 0)
    expect(registry.get('a')!.state).toBe('ejected')
    for (let i = 0; i < 6; i++) expect(pickForTask(registry, 'usa')?.nodeId).not.toBe('a')
  })

  test('never ejects more than half of a region', () => {
    const { registry } = setup()
    for (const id of ['a', 'b', 'c']) registry.announce(client(id, 'usa', { port: 4000 + id.charCodeAt(0) }), 0)
    failTimes(registry, 'a', 3, 0)
    failTimes(registry, 'b', 3, 0)
    failTimes(registry, 'c', 3, 0)
    // floor(3 * 50%) = 1 may be ejected at once.
    expect(['a', 'b', 'c'].map((id) => registry.get(id)!.state)).toEqual(['ejected', 'failing', 'failing'])
  })

  test('a lone client is never ejected: one bad payload cannot take a region down', () => {
    const { registry } = setup()
    registry.announce(client('solo', 'eu-west-1'), 0)
    failTimes(registry, 'solo', 10, 0)
    // Kept, and still picked, but shown as failing.
    expect(registry.get('solo')!.state).toBe('failing')
    expect(pickForTask(registry, 'eu-west-1')?.nodeId).toBe('solo')
    expect(pickForTask(registry, 'eu-west-1')?.nodeId).toBe('solo')
  })

  test('after the back-off one trial task decides; each ejection doubles the back-off up to the maximum', () => {
    const { registry, states } = setup()
    registry.announce(client('a', 'usa'), 0)
    registry.announce(client('b', 'usa', { port: 4001 }), 0)
    failTimes(registry, 'a', 3, 0)
    expect(registry.get('a')!.ejectedUntil).toBe(1000)
    expect(registry.endBackoffs(999)).toEqual([])
    expect(registry.endBackoffs(1000).map((c) => c.nodeId)).toEqual(['a'])
    expect(registry.get('a')!.state).toBe('probation')
    // The trial: a is picked once, then withheld until its result is in.
    const picked = [pickForTask(registry, 'usa')?.nodeId, pickForTask(registry, 'usa')?.nodeId, pickForTask(registry, 'usa')?.nodeId]
    expect(picked.filter((id) => id === 'a')).toHaveLength(1)
    registry.recordFailure(registry.get('a')!, 1100)
    expect(registry.get('a')!.state).toBe('ejected')
    expect(registry.get('a')!.ejectedUntil).toBe(1100 + 2000)
    registry.endBackoffs(3100)
    registry.recordFailure(registry.get('a')!, 3200)
    expect(registry.get('a')!.ejectedUntil).toBe(3200 + 4000)
    registry.endBackoffs(7200)
    registry.recordFailure(registry.get('a')!, 7300)
    expect(registry.get('a')!.ejectedUntil).toBe(7300 + 8000)
    registry.endBackoffs(15_300)
    registry.recordFailure(registry.get('a')!, 15_400)
    expect(registry.get('a')!.ejectedUntil).toBe(15_400 + 8000)
    // A successful trial restores it.
    registry.endBackoffs(23_400)
    registry.recordSuccess(registry.get('a')!, 3, 23_500)
    expect(registry.get('a')!.state).toBe('healthy')
    // ejected, back-off over, picked for its trial (still probation, now busy), trial failed.
    expect(states.slice(0, 4)).toEqual(['a:ejected', 'a:probation', 'a:probation', 'a:ejected'])
    expect(states.slice(-2)).toEqual(['a:probation', 'a:healthy'])
  })

  test('silent clients of one protocol are found by their last heartbeat', () => {
    const { registry } = setup()
    registry.announce(client('h', 'usa'), 0)
    registry.announce(client('w', 'usa', { protocol: 'ws' }), 0)
    registry.touch('h', 500)
    expect(registry.silent('http', 1000, 1400)).toEqual([])
    expect(registry.silent('http', 1000, 1600).map((c) => c.nodeId)).toEqual(['h'])
    expect(registry.silent('ws', 1000, 1600).map((c) => c.nodeId)).toEqual(['w'])
  })

  test('reconfiguring the hierarchy keeps the clients and routes by the new tree', () => {
    const { registry } = setup()
    registry.announce(client('a', 'us-east-1'), 0)
    expect(registry.within('usa').map((c) => c.nodeId)).toEqual(['a'])
    registry.reconfigure(new Regions({ 'us-east-1': 'atlantic' }), POLICY)
    expect(registry.within('usa')).toEqual([])
    expect(registry.within('atlantic').map((c) => c.nodeId)).toEqual(['a'])
    expect(pickForTask(registry, 'atlantic')?.nodeId).toBe('a')
  })

  test('remove emits left with the reason and the client is no longer picked', () => {
    const { registry, events } = setup()
    registry.announce(client('a', 'usa'), 0)
    registry.remove('a', 'no heartbeat')
    expect(pickForTask(registry, 'usa')).toBeUndefined()
    expect(events.at(-1)).toMatchObject({ type: 'left', reason: 'no heartbeat' })
  })
})

describe('registry with replaced records', () => {
  test("failures of a replaced record never eject the node's new record", () => {
    const { registry } = setup()
    const old = registry.announce(client('a', 'usa', { protocol: 'ws' }), 0).client
    for (const id of ['b', 'c', 'd']) registry.announce(client(id, 'usa', { port: 4000 + id.charCodeAt(0) }), 0)
    registry.announce(client('a', 'usa', { protocol: 'ws' }), 10)
    // The old socket's tasks fail as it is closed.
    for (let i = 0; i < 5; i++) registry.recordFailure(old, 20)
    expect(registry.get('a')!.state).toBe('healthy')
    const picked = new Set(Array.from({ length: 8 }, () => pickForTask(registry, 'usa')?.nodeId))
    expect(picked).toEqual(new Set(['a', 'b', 'c', 'd']))
  })

  test("a node's slots hold across its records: tasks still on a forgotten or replaced record count against the new one until they end", () => {
    const cases = [
      { how: 'forgotten, then back by heartbeat', replace: (registry: Registry) => registry.remove('a', 'forgotten by an operator') },
      { how: 'back at another address', replace: (_registry: Registry) => undefined, port: 4001 },
    ]
    for (const { how, replace, port } of cases) {
      const { registry } = setup()
      const old = registry.announce(client('a', 'usa', { maxInFlight: 1 }), 0).client
      registry.acquire(old)
      replace(registry)
      const fresh = registry.announce(client('a', 'usa', { maxInFlight: 1, port: port ?? 4000 }), 10).client
      expect({ how, fresh: fresh !== old, inFlight: fresh.inFlight, picked: registry.pick('usa')?.client.nodeId }).toEqual({
        how,
        fresh: true,
        inFlight: 1,
        picked: undefined,
      })
      // The old record's task ends: the node has its slot again.
      registry.release(old)
      expect({ how, inFlight: fresh.inFlight, picked: registry.pick('usa')?.client.nodeId }).toEqual({ how, inFlight: 0, picked: 'a' })
    }
  })

  test("a node that left keeps an operator's drain and a running ejection for its return; one an operator forgot keeps nothing", () => {
    for (const forgot of [false, true]) {
      const { registry } = setup()
      registry.announce(client('a', 'usa', { protocol: 'ws' }), 0)
      registry.announce(client('b', 'usa', { protocol: 'ws', port: 4001 }), 0)
      registry.setOperatorDrained('a', true)
      registry.eject('b', 0, 60_000)
      for (const id of ['a', 'b']) forgot ? registry.forget(id, 'forgotten by an operator') : registry.remove(id, 'disconnected')
      const a = registry.announce(client('a', 'usa', { protocol: 'ws' }), 10).client
      const b = registry.announce(client('b', 'usa', { protocol: 'ws', port: 4001 }), 10).client
      expect({ forgot, drained: a.operatorDrained, b: b.state, until: b.ejectedUntil }).toEqual(
        forgot ? { forgot, drained: false, b: 'healthy', until: 0 } : { forgot, drained: true, b: 'ejected', until: 60_000 },
      )
      // The ejection still ends on time, on the new record.
      registry.endBackoffs(60_000)
      expect(registry.get('b')!.state).toBe(forgot ? 'healthy' : 'probation')
    }
  })

  test('a client on its trial task announces it, so it can leave its broadcast topics', () => {
    const { registry, events } = setup()
    registry.announce(client('a', 'usa'), 0)
    registry.announce(client('b', 'usa', { port: 4001 }), 0)
    failTimes(registry, 'a', 3, 0)
    registry.endBackoffs(1000)
    const before = events.length
    while (pickForTask(registry, 'usa')?.nodeId !== 'a');
    expect(events.slice(before).map((event) => event.type)).toEqual(['state'])
    expect(registry.canTakeTasks(registry.get('a')!)).toBe(false)
  })
})

describe('regions cache', () => {
  test('names outside the hierarchy still climb to global', () => {
    const regions = new Regions(SEED_HIERARCHY)
    expect(regions.chain('made-up')).toEqual(['made-up', 'global'])
    expect(regions.chain('us-east-1')).toBe(regions.chain('us-east-1'))
  })
})

describe('registry bounds and pools', () => {
  test("the ejection cap counts the pool a task drew from, not the client's own region", () => {
    const { registry } = setup()
    registry.announce(client('east', 'us-east-1'), 0)
    registry.announce(client('west', 'us-west-1'), 0)
    // Tasks for us-east-1 draw from us-east-1 alone: its one client is kept.
    for (let i = 0; i < 5; i++) registry.recordFailure(registry.get('east')!, 0, registry.pick('us-east-1')!.pool)
    expect(registry.get('east')!.state).toBe('failing')
    // Tasks for usa draw from both: one of two may go.
    expect(registry.pick('us-east-1')!.pool).toBe('us-east-1')
    expect(registry.pick('us-west-1')!.pool).toBe('us-west-1')
    registry.recordFailure(registry.get('east')!, 0, 'usa')
    expect(registry.get('east')!.state).toBe('ejected')
    // A task for us-east-1 now climbs to usa.
    expect(registry.pick('us-east-1')).toMatchObject({ client: { nodeId: 'west' }, pool: 'usa' })
    // And the last one in usa's pool is kept.
    failTimes(registry, 'west', 5, 0)
    expect(registry.get('west')!.state).toBe('failing')
  })

  test('an attempt with no verdict ends a trial, so the client gets the next trial', () => {
    const { registry } = setup()
    registry.announce(client('a', 'usa'), 0)
    registry.announce(client('b', 'usa', { port: 4001 }), 0)
    failTimes(registry, 'a', 3, 0)
    registry.endBackoffs(1000)
    const picks = new Set([pickForTask(registry, 'usa')?.nodeId, pickForTask(registry, 'usa')?.nodeId])
    expect(picks.has('a')).toBe(true)
    expect(registry.get('a')!.trialInFlight).toBe(true)
    registry.recordNoVerdict(registry.get('a')!)
    expect(registry.get('a')).toMatchObject({ state: 'probation', trialInFlight: false })
    expect([pickForTask(registry, 'usa')?.nodeId, pickForTask(registry, 'usa')?.nodeId]).toContain('a')
    // It means nothing for a healthy client.
    registry.recordNoVerdict(registry.get('b')!)
    expect(registry.get('b')!.state).toBe('healthy')
  })

  test("a region's balancer is forgotten when its last client leaves; the hierarchy's stay usable", () => {
    const { registry } = setup()
    for (let i = 0; i < 30_000; i++) registry.announce(client(`c${i}`, `invented-${i}`), 0)
    // Each invented region, plus global.
    expect(registry.trackedRegions).toBe(30_001)
    for (let i = 0; i < 30_000; i++) registry.remove(`c${i}`, 'gone')
    expect(registry.trackedRegions).toBe(0)
    registry.announce(client('back', 'us-east-1'), 0)
    expect(pickForTask(registry, 'usa')?.nodeId).toBe('back')
    registry.setWeight('back', 0)
    expect(registry.trackedRegions).toBe(0)
  })

  test('hasClientsIn follows each client to its region: a move, a new record for the node, a removal', () => {
    const { registry } = setup()
    registry.announce(client('a', 'lab-1'), 0)
    expect(registry.hasClientsIn('lab-1')).toBe(true)
    expect(registry.hasClientsIn('global')).toBe(false)
    // The same client announcing another region moves.
    registry.announce(client('a', 'lab-2'), 1)
    expect([registry.hasClientsIn('lab-1'), registry.hasClientsIn('lab-2')]).toEqual([false, true])
    // The node back at another address is a new record, in a third region; the old record's region is left.
    registry.announce(client('a', 'lab-3', { port: 4002 }), 2)
    expect([registry.hasClientsIn('lab-2'), registry.hasClientsIn('lab-3')]).toEqual([false, true])
    registry.announce(client('b', 'lab-3', { port: 4003 }), 2)
    registry.remove('a', 'gone')
    expect(registry.hasClientsIn('lab-3')).toBe(true)
    registry.remove('b', 'gone')
    expect(registry.hasClientsIn('lab-3')).toBe(false)
  })

  test('max_clients: new node ids are refused past it, known ones keep refreshing', () => {
    const { registry } = setup()
    registry.maxClients = 2
    registry.announce(client('a', 'usa'), 0)
    expect(registry.hasRoomFor('b')).toBe(true)
    registry.announce(client('b', 'usa', { port: 4001 }), 0)
    expect(registry.hasRoomFor('c')).toBe(false)
    expect(registry.hasRoomFor('a')).toBe(true)
    registry.remove('a', 'gone')
    expect(registry.hasRoomFor('c')).toBe(true)
  })
})

describe('clients held by other instances (cluster mode)', () => {
  test("prefer_local picks this instance's own clients while it has one left, the others' only then", () => {
    const { registry } = setup()
    registry.announce(client('local', 'usa'), 0)
    registry.announce(client('remote', 'usa', { instance: 'b', protocol: 'ws' }), 0)
    expect(registry.get('remote')!.route).toBe('relay')
    const shared = Array.from({ length: 4 }, () => registry.pick('usa')!.client.nodeId)
    expect(new Set(shared)).toEqual(new Set(['local', 'remote']))
    const preferred = Array.from({ length: 4 }, () => registry.pick('usa', { preferLocal: true })!.client.nodeId)
    expect(preferred).toEqual(['local', 'local', 'local', 'local'])
    registry.remove('local', 'gone')
    expect(registry.pick('usa', { preferLocal: true })!.client.nodeId).toBe('remote')
  })

  test("another instance's clients are the same record while that instance says so, and are not expired here", () => {
    const { registry, events } = setup()
    registry.announce(client('remote', 'usa', { instance: 'b' }), 0)
    registry.announce(client('remote', 'usa', { instance: 'b', port: 5000 }), 10)
    expect(events.map((event) => event.type)).toEqual(['joined'])
    expect(registry.get('remote')!.port).toBe(5000)
    expect(registry.silent('http', 1, 1_000_000)).toEqual([])
  })
})
