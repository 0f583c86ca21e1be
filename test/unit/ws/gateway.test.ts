import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import { healthPolicy, makeSettings } from '../../../src/config/settings.ts'
import { LocalMembership } from '../../../src/fleet/membership.ts'
import { NodeConflicts } from '../../../src/fleet/refused-claims.ts'
import { Registry, type RegistryEvent } from '../../../src/fleet/registry.ts'
import { MonitorFeed } from '../../../src/observe/monitor-feed.ts'
import { TaskStats } from '../../../src/observe/task-stats.ts'
import { AuthFailures } from '../../../src/security/auth-failures.ts'
import { DeadlineTimer } from '../../../src/tasks/deadlines.ts'
import { AttemptError } from '../../../src/transports/types.ts'
import { type AgentSocket, type SocketData, socketData, WsTransport } from '../../../src/transports/ws.ts'
import { errorCodeSchema, errorFrameSchema } from '../../../src/wire/errors.ts'
import { monitorFrameSchema } from '../../../src/wire/monitor.ts'
import { heartbeatAckSchema, registeredSchema } from '../../../src/wire/ws.ts'
import { WsGateway } from '../../../src/ws/gateway.ts'
import { FakeClock } from '../../support/fake-clock.ts'
import { SEED_CONFIG, TOKEN } from '../../support/helpers.ts'

/**
 * What the gateway and the WebSocket transport use of Bun's ServerWebSocket, recorded. Closing only
 * records the close: as with Bun, the gateway hears of it when the test calls handler.close.
 */
class FakeSocket {
  readonly sent: string[] = []
  readonly topics = new Set<string>()
  closed: { code?: number; reason?: string } | undefined
  terminated = false
  pings = 0
  corks = 0
  /** What the peer has not read yet: Bun's getBufferedAmount. */
  buffered = 0

  constructor(readonly data: SocketData) {}

  getBufferedAmount(): number {
    return this.buffered
  }

  send(message: string): number {
    this.sent.push(message)
    return message.length
  }

  close(code?: number, reason?: string): void {
    this.closed ??= { code, reason }
  }

  subscribe(topic: string): void {
    this.topics.add(topic)
  }

  unsubscribe(topic: string): void {
    this.topics.delete(topic)
  }

  ping(): void {
    this.pings++
  }

  terminate(): void {
    this.terminated = true
  }

  cork<T>(callback: (socket: this) => T): T {
    this.corks++
    return callback(this)
  }

  /** Every frame sent, parsed. */
  get frames(): Array<{ type: string; payload?: unknown }> {
    return this.sent.map((text) => JSON.parse(text))
  }

  /** The codes of the error frames sent, in order; each frame must be a valid error frame with a documented code. */
  errorCodes(): string[] {
    return this.frames.filter((frame) => frame.type === 'error').map((frame) => errorCodeSchema.parse(errorFrameSchema.parse(frame).payload.code))
  }

  /** The message of the last error frame. */
  lastError(): string {
    const errors = this.frames.filter((frame) => frame.type === 'error')
    return errorFrameSchema.parse(errors.at(-1)).payload.message
  }
}

function gatewayWorld(overrides: Record<string, unknown> = {}) {
  const clock = new FakeClock()
  const settings = makeSettings(parseConfig({ ...SEED_CONFIG, ...overrides }, 'test').config, {
    externalTokens: [],
    failures: new AuthFailures(() => clock.monotonic()),
  })
  const events: RegistryEvent[] = []
  const registry = new Registry(settings.regions, healthPolicy(settings.config), (event) => {
    events.push(event)
    // As the server wires it: topics follow health, and the feed hears of every change.
    if (event.client.protocol === 'ws' && event.type !== 'left') gateway.syncTopics(event.client.nodeId)
    feed.onRegistryEvent(event)
  })
  registry.maxClients = settings.config.max_clients
  const published: Array<{ topic: string; message: string }> = []
  const publish = (topic: string, message: string) => void published.push({ topic, message })
  const transport = new WsTransport(
    () => settings.config.ws.write_timeout * 1000,
    publish,
    () => settings.headerPolicy,
  )
  const membership = new LocalMembership(registry, () => 'test-instance')
  const stats = new TaskStats()
  const feed = new MonitorFeed({
    membership,
    regions: () => settings.regions,
    stats,
    statusLine: () => ({ clients: membership.size, in_flight: 0, tasks_total: stats.total, tasks_failed: stats.failed }),
    clock,
    publish,
  })
  const logs: string[] = []
  const gateway: WsGateway = new WsGateway({
    settings,
    registry,
    registration: {
      settings,
      registry,
      clock,
      onReplaced: () => {},
      isAlive: (client) => gateway.isAlive(client.nodeId),
      conflicts: new NodeConflicts({ log: (line) => void logs.push(line), now: () => clock.now(), forgetMs: () => 180_000 }),
    },
    transport,
    feed,
    clock,
    log: (line) => void logs.push(line),
  })
  const deadlines = new DeadlineTimer(clock)

  /** A socket Bun has just opened. */
  const open = (remoteAddress = '127.0.0.7'): FakeSocket => {
    const socket = new FakeSocket(socketData(remoteAddress, clock.now()))
    gateway.handler.open?.(asAgent(socket))
    return socket
  }
  /** A message from the peer: an object is sent as its JSON text, a string or a Buffer as it is. */
  const receive = async (socket: FakeSocket, message: unknown) => {
    gateway.handler.message?.(
      asAgent(socket),
      typeof message === 'string' || Buffer.isBuffer(message) ? (message as string | Buffer<ArrayBuffer>) : JSON.stringify(message),
    )
    // A register is answered once its checks (an address, a live holder) are done: let them run.
    await Bun.sleep(0)
  }
  const hello = (nodeId: string, extra: Record<string, unknown> = {}) => ({
    type: 'register',
    payload: { node_id: nodeId, token: TOKEN, region: 'us-east-1', ...extra },
  })
  /** Opens a socket and registers it as `nodeId`. */
  const registered = async (nodeId: string, extra: Record<string, unknown> = {}): Promise<FakeSocket> => {
    const socket = open()
    await receive(socket, hello(nodeId, extra))
    expect(socket.frames.at(-1)?.type).toBe('registered')
    return socket
  }
  /** A task sent to `nodeId` over its socket, as the dispatcher sends one. */
  const attempt = (nodeId: string, taskId: string) => transport.send(registry.get(nodeId)!, taskId, '{"job":1}', deadlines.start(30_000))
  const close = (socket: FakeSocket, code: number, reason = '') => gateway.handler.close?.(asAgent(socket), code, reason)

  return { clock, settings, registry, events, transport, feed, gateway, published, logs, open, receive, hello, registered, attempt, close, deadlines }
}

function asAgent(socket: FakeSocket): AgentSocket {
  return socket as unknown as AgentSocket
}

/** A message whose text nests `depth` levels deep in all, as the gateway counts them (the message itself is 1). */
function taskResponseNested(taskId: string, depth: number): string {
  const inner = depth - 2
  return `{"type":"task_response","payload":{"task_id":${JSON.stringify(taskId)},"response":${'['.repeat(inner)}${']'.repeat(inner)}}}`
}

describe('ws gateway', () => {
  test('register is answered with a registered frame, and the client joins the topic of its own region', async () => {
    const world = gatewayWorld()
    const socket = world.open('127.0.0.7')
    await world.receive(socket, world.hello('east-1', { weight: 5 }))
    const registered = registeredSchema.parse(socket.frames[0])
    expect(registered.payload).toEqual({
      node_id: 'east-1',
      region: 'us-east-1',
      weight: 5,
      payload_format: 'object',
      heartbeat_interval: 30,
      server_time: new Date(world.clock.now()).toISOString(),
    })
    expect(socket.data.nodeId).toBe('east-1')
    // A hello without an ip is known by the socket's address.
    expect(world.registry.get('east-1')).toMatchObject({ protocol: 'ws', ip: '127.0.0.7', weight: 5, connectionId: socket.data.connectionId })
    // One topic: a broadcast to an ancestor publishes to each region under it that has clients (the next test).
    expect([...socket.topics]).toEqual(['region:us-east-1'])
    expect(socket.errorCodes()).toEqual([])
    // An idle agent holds no task map and no settled register: they are made when needed.
    expect(socket.data.pending).toBeUndefined()
    expect(socket.data.registering).toBeUndefined()
  })

  test("a broadcast to an ancestor goes to the topic of each region under it with clients, once each, in each payload format's variant", async () => {
    const world = gatewayWorld()
    const east1 = await world.registered('east-1')
    const east2 = await world.registered('east-2')
    const usa = await world.registered('usa-1', { region: 'usa' })
    const stringy = await world.registered('east-s', { payload_format: 'string' })
    await world.registered('eu-1', { region: 'eu-west-1' })
    expect([...usa.topics]).toEqual(['region:usa'])
    expect([...stringy.topics]).toEqual(['string:region:us-east-1'])
    const clients = world.registry.within('northamerica')
    expect(clients.map((client) => client.nodeId).sort()).toEqual(['east-1', 'east-2', 'east-s', 'usa-1'])
    const failed: number[] = []
    world.transport.fanOut('northamerica', 't-b', '{"job":1}', clients, world.deadlines.start(30_000), {
      answered: () => {},
      failed: (index) => failed.push(index),
    })
    expect(world.published.map(({ topic }) => topic).sort()).toEqual(['region:us-east-1', 'region:usa', 'string:region:us-east-1'])
    expect(JSON.parse(world.published.find(({ topic }) => topic === 'string:region:us-east-1')!.message)).toMatchObject({ payload: '{"job":1}' })
    // Every client's part went out (none failed at once).
    expect(failed).toEqual([])
    // Each subscriber's part is waited for on its own socket.
    for (const socket of [east1, east2, usa, stringy]) expect(socket.data.pending?.has('t-b')).toBe(true)
  })

  test('a task to an agent with nothing else in flight is written at once; tasks to a busy one go together, corked, at the end of the turn', async () => {
    const world = gatewayWorld()
    const socket = await world.registered('east-1')
    const before = socket.sent.length
    void world.attempt('east-1', 't-1')
    expect(socket.sent.length).toBe(before + 1)
    void world.attempt('east-1', 't-2')
    void world.attempt('east-1', 't-3')
    // Both wait for the end of the turn, to share one corked write.
    expect(socket.sent.length).toBe(before + 1)
    expect(socket.corks).toBe(0)
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(socket.corks).toBe(1)
    expect(socket.frames.slice(before).map((frame) => (frame as { task_id?: string }).task_id)).toEqual(['t-1', 't-2', 't-3'])
  })

  test('registering again in the other payload format moves the socket to the other variant of its topic', async () => {
    const world = gatewayWorld()
    const socket = await world.registered('east-1')
    await world.receive(socket, world.hello('east-1', { payload_format: 'string' }))
    expect(socket.frames.at(-1)).toMatchObject({ type: 'registered', payload: { payload_format: 'string' } })
    expect([...socket.topics]).toEqual(['string:region:us-east-1'])
    await world.receive(socket, world.hello('east-1', { payload_format: 'object' }))
    expect([...socket.topics]).toEqual(['region:us-east-1'])
  })

  test('a bad token gets an invalid_token error frame and the connection is closed with 1008', async () => {
    const world = gatewayWorld()
    const socket = world.open()
    await world.receive(socket, world.hello('east-1', { token: 'not-a-real-token' }))
    expect(socket.errorCodes()).toEqual(['invalid_token'])
    expect(socket.closed).toEqual({ code: 1008, reason: 'invalid token' })
    expect(world.registry.size).toBe(0)
  })

  test('a register past max_clients gets too_many_clients and is closed with 1013, try again later', async () => {
    const world = gatewayWorld({ max_clients: 1 })
    await world.registered('first')
    const second = world.open()
    await world.receive(second, world.hello('second'))
    expect(second.errorCodes()).toEqual(['too_many_clients'])
    expect(second.closed).toEqual({ code: 1013, reason: 'too many clients' })
  })

  test('a message that is not JSON gets invalid_json, and the connection stays open', async () => {
    const world = gatewayWorld()
    const socket = world.open()
    await world.receive(socket, '{"type": "register",')
    expect(socket.errorCodes()).toEqual(['invalid_json'])
    expect(socket.lastError()).toBe('message is not valid JSON')
    expect(socket.closed).toBeUndefined()
  })

  test('a message of an unknown type or shape gets invalid_message naming the field', async () => {
    const world = gatewayWorld()
    const socket = world.open()
    await world.receive(socket, { type: 'dance' })
    await world.receive(socket, world.hello('east-1', { region: 'no spaces allowed' }))
    expect(socket.errorCodes()).toEqual(['invalid_message', 'invalid_message'])
    expect(socket.lastError()).toMatch(/^invalid message: payload\.region: /)
  })

  test('a binary message gets binary_not_supported', async () => {
    const world = gatewayWorld()
    const socket = world.open()
    await world.receive(socket, Buffer.from(JSON.stringify(world.hello('east-1'))))
    expect(socket.errorCodes()).toEqual(['binary_not_supported'])
    expect(socket.data.nodeId).toBeUndefined()
  })

  test('a heartbeat or a task_response before register gets not_registered; after it, a heartbeat is acknowledged', async () => {
    const world = gatewayWorld()
    const socket = world.open()
    await world.receive(socket, { type: 'heartbeat' })
    await world.receive(socket, { type: 'task_response', payload: { task_id: 't-1', response: 1 } })
    expect(socket.errorCodes()).toEqual(['not_registered', 'not_registered'])
    await world.receive(socket, world.hello('east-1'))
    await world.receive(socket, { type: 'heartbeat', payload: { weight: 0 } })
    expect(heartbeatAckSchema.parse(socket.frames.at(-1)).payload.server_time).toBe(new Date(world.clock.now()).toISOString())
    // A heartbeat's weight applies: 0 drains the client, and it leaves its broadcast topics.
    expect(world.registry.get('east-1')?.weight).toBe(0)
    expect(socket.topics.size).toBe(0)
  })

  test('a second register with another node id on the same connection is already_registered', async () => {
    const world = gatewayWorld()
    const socket = await world.registered('east-1')
    await world.receive(socket, world.hello('other'))
    expect(socket.errorCodes()).toEqual(['already_registered'])
    expect(world.registry.get('other')).toBeUndefined()
  })

  test("a task_response resolves the attempt with the client's status, headers and its response's own text", async () => {
    const world = gatewayWorld()
    const socket = await world.registered('east-1')
    const answer = world.attempt('east-1', 't-1')
    await world.receive(
      socket,
      '{"type":"task_response","payload":{"task_id":"t-1","status":201,"headers":{"X-Trace":"abc"},"response":{"big": 12345678901234567890}}}',
    )
    expect(await answer).toEqual({ status: 201, headers: { 'x-trace': 'abc', 'content-type': 'application/json' }, body: '{"big": 12345678901234567890}' })
    // Answered once: a second answer for it is late.
    await world.receive(socket, { type: 'task_response', payload: { task_id: 't-1', response: 2 } })
    expect(socket.errorCodes()).toEqual(['unknown_task'])
  })

  test('an invalid task_response fails the pending attempt at once, without waiting for the deadline', async () => {
    const world = gatewayWorld()
    const socket = await world.registered('east-1')
    const answer = world.attempt('east-1', 't-1').catch((caught: unknown) => caught)
    await world.receive(socket, { type: 'task_response', payload: { task_id: 't-1', status: 99, response: 'early' } })
    expect(socket.errorCodes()).toEqual(['invalid_message'])
    const error = await answer
    expect(error).toBeInstanceOf(AttemptError)
    expect(error).toMatchObject({ kind: 'invalid_answer', message: expect.stringMatching(/^the client's task_response was invalid: payload\.status: /) })
    expect(socket.data.pending?.size).toBe(0)
  })

  test('a message nested deeper than 1000 levels is refused as too_deep, and the attempt it answers fails', async () => {
    const world = gatewayWorld()
    const socket = await world.registered('east-1')
    const answer = world.attempt('east-1', 't-deep').catch((caught: unknown) => caught)
    await world.receive(socket, taskResponseNested('t-deep', 1001))
    expect(socket.errorCodes()).toEqual(['too_deep'])
    expect(socket.lastError()).toBe('message is nested deeper than 1000 levels')
    expect(await answer).toMatchObject({
      kind: 'invalid_answer',
      message: "the client's task_response was refused: message is nested deeper than 1000 levels",
    })
  })

  test('a message nested exactly 1000 levels is accepted', async () => {
    const world = gatewayWorld()
    const socket = await world.registered('east-1')
    const answer = world.attempt('east-1', 't-1000')
    await world.receive(socket, taskResponseNested('t-1000', 1000))
    expect((await answer).body).toBe(`${'['.repeat(998)}${']'.repeat(998)}`)
    expect(socket.errorCodes()).toEqual([])
  })

  test('a socket that closes takes its client with it and fails its pending attempts at once', async () => {
    const world = gatewayWorld()
    const socket = await world.registered('east-1')
    const answer = world.attempt('east-1', 't-1')
    world.close(socket, 1006)
    expect(await answer.catch((caught: unknown) => caught)).toMatchObject({ kind: 'disconnected', message: 'the client disconnected before answering' })
    expect(world.registry.get('east-1')).toBeUndefined()
    expect(world.events.at(-1)).toMatchObject({ type: 'left', reason: 'disconnected (code 1006)' })
    expect(world.gateway.sockets.size).toBe(0)
  })

  test('a node that registers on a new connection while the old one no longer answers closes the old one with 4000; the old one closing later leaves the new one alone', async () => {
    const world = gatewayWorld()
    const first = await world.registered('east-1')
    const second = world.open()
    const registering = world.receive(second, world.hello('east-1'))
    // The old connection is pinged and gets the probe's time to answer; it does not.
    await Bun.sleep(0)
    expect(first.pings).toBeGreaterThan(0)
    world.clock.advance(1500)
    await registering
    await Bun.sleep(0)
    expect(second.frames.at(-1)?.type).toBe('registered')
    expect(first.closed).toEqual({ code: 4000, reason: 'replaced by a newer connection for this node_id' })
    world.close(first, 4000)
    expect(world.registry.get('east-1')?.connectionId).toBe(second.data.connectionId)
    expect(world.transport.socketOf('east-1')).toBe(asAgent(second))
  })

  test('a node that registers on a new connection while the old one answers its ping is refused with node_id_in_use (4009)', async () => {
    const world = gatewayWorld()
    const first = await world.registered('east-1')
    const second = world.open()
    const registering = world.receive(second, world.hello('east-1'))
    await Bun.sleep(0)
    world.gateway.handler.pong?.(asAgent(first), Buffer.alloc(0))
    world.clock.advance(1500)
    await registering
    await Bun.sleep(0)
    expect(second.errorCodes()).toEqual(['node_id_in_use'])
    expect(second.closed).toEqual({ code: 4009, reason: 'node_id in use' })
    expect(first.closed).toBeUndefined()
    expect(world.transport.socketOf('east-1')).toBe(asAgent(first))
    expect(world.logs.some((line) => line.includes('node_id conflict: "east-1"'))).toBe(true)
  })

  test('a socket that neither registers nor joins the feed is closed with 1008 once register_timeout has passed', async () => {
    const world = gatewayWorld({ ws: { ...SEED_CONFIG.ws, register_timeout: 5 } })
    const idle = world.open()
    const agent = await world.registered('east-1')
    const dashboard = world.open()
    await world.receive(dashboard, { type: 'monitor', payload: { token: TOKEN } })
    world.clock.advance(4999)
    world.gateway.closeUnregistered(world.clock.now())
    expect(idle.closed).toBeUndefined()
    world.clock.advance(1)
    world.gateway.closeUnregistered(world.clock.now())
    expect(idle.errorCodes()).toEqual(['register_timeout'])
    expect(idle.closed).toEqual({ code: 1008, reason: 'register within ws.register_timeout (5 s)' })
    expect(agent.closed).toBeUndefined()
    expect(dashboard.closed).toBeUndefined()
  })

  test('sockets silent past read_timeout are cut off; a message or a pong is a sign of life', async () => {
    const world = gatewayWorld({ ws: { ...SEED_CONFIG.ws, read_timeout: 10 } })
    const talker = await world.registered('talker')
    const ponger = await world.registered('ponger')
    const silent = await world.registered('silent')
    world.clock.advance(8000)
    await world.receive(talker, { type: 'heartbeat' })
    world.gateway.handler.pong?.(asAgent(ponger), Buffer.alloc(0))
    world.clock.advance(2001)
    world.gateway.closeSilent(world.clock.now())
    expect([talker.terminated, ponger.terminated, silent.terminated]).toEqual([false, false, true])
    expect(world.registry.get('ponger')?.lastSeen).toBe(world.clock.now() - 2001)
  })

  test('pingAll pings every open socket', async () => {
    const world = gatewayWorld()
    const sockets = [world.open(), await world.registered('east-1')]
    world.gateway.pingAll()
    expect(sockets.map((socket) => socket.pings)).toEqual([1, 1])
  })

  test('a dashboard that joins with a good token gets a monitor_ok snapshot and the monitor topic', async () => {
    const world = gatewayWorld()
    await world.registered('east-1')
    const dashboard = world.open()
    await world.receive(dashboard, { type: 'monitor', payload: { token: TOKEN } })
    const frame = monitorFrameSchema.parse(dashboard.frames[0])
    if (frame.type !== 'monitor_ok') throw new Error(`expected monitor_ok, got ${frame.type}`)
    expect(frame.payload.clients.map((client) => client.node_id)).toEqual(['east-1'])
    expect(frame.payload.status).toEqual({ clients: 1, in_flight: 0, tasks_total: 0, tasks_failed: 0 })
    expect(frame.payload.regions.region).toBe('global')
    expect([...dashboard.topics]).toEqual(['monitor'])
    expect(dashboard.data.monitor).toBe(true)
    expect(world.feed.watching).toBe(true)
    // Asking again gets a fresh snapshot, without joining twice: at most one a second, asks in between are one.
    for (let ask = 0; ask < 5; ask++) await world.receive(dashboard, { type: 'monitor', payload: { token: TOKEN } })
    expect(dashboard.frames.map((each) => each.type)).toEqual(['monitor_ok'])
    world.clock.advance(999)
    expect(dashboard.frames.map((each) => each.type)).toEqual(['monitor_ok'])
    world.clock.advance(1)
    expect(dashboard.frames.map((each) => each.type)).toEqual(['monitor_ok', 'monitor_ok'])
    world.clock.advance(5000)
    expect(dashboard.frames.map((each) => each.type)).toEqual(['monitor_ok', 'monitor_ok'])
    await world.receive(dashboard, { type: 'monitor', payload: { token: TOKEN } })
    expect(dashboard.frames.map((each) => each.type)).toEqual(['monitor_ok', 'monitor_ok', 'monitor_ok'])
    expect(world.feed.watching).toBe(true)
    world.close(dashboard, 1000)
    expect(world.feed.watching).toBe(false)
  })

  test('a dashboard behind on the feed is cut after write_timeout unless it drains; one that keeps up is left alone', async () => {
    const world = gatewayWorld({ ws: { ...SEED_CONFIG.ws, write_timeout: 0.05 } })
    const [behind, drains, keepsUp] = [world.open(), world.open(), world.open()]
    for (const dashboard of [behind, drains, keepsUp]) await world.receive(dashboard, { type: 'monitor', payload: { token: TOKEN } })
    // After a batch: two have not read it all.
    behind.buffered = 4096
    drains.buffered = 4096
    world.gateway.watchMonitors()
    world.gateway.handler.drain!(asAgent(drains))
    await Bun.sleep(120)
    expect([behind.terminated, drains.terminated, keepsUp.terminated]).toEqual([true, false, false])
  })

  test('a dashboard whose snapshot is not read is cut after write_timeout', async () => {
    const world = gatewayWorld({ ws: { ...SEED_CONFIG.ws, write_timeout: 0.05 } })
    const dashboard = world.open()
    dashboard.buffered = 300_000
    await world.receive(dashboard, { type: 'monitor', payload: { token: TOKEN } })
    await Bun.sleep(120)
    expect(dashboard.terminated).toBe(true)
  })

  test('a dashboard with a bad token gets invalid_token and is closed with 1008', async () => {
    const world = gatewayWorld()
    const dashboard = world.open()
    await world.receive(dashboard, { type: 'monitor', payload: { token: 'wrong-token' } })
    expect(dashboard.errorCodes()).toEqual(['invalid_token'])
    expect(dashboard.closed).toEqual({ code: 1008, reason: 'invalid token' })
    expect(world.feed.watching).toBe(false)
  })
})
