import { describe, expect, test } from 'bun:test'
import type { Server } from 'bun'
import { parseConfig } from '../../../src/config/config.ts'
import { healthPolicy, makeSettings } from '../../../src/config/settings.ts'
import { LocalMembership } from '../../../src/fleet/membership.ts'
import { NodeConflicts } from '../../../src/fleet/refused-claims.ts'
import { Registry } from '../../../src/fleet/registry.ts'
import { type AppDeps, createApp } from '../../../src/http/app.ts'
import { createTaskRoute } from '../../../src/http/task-route.ts'
import { Observations } from '../../../src/observe/observations.ts'
import { ClientTasks, TaskStats } from '../../../src/observe/task-stats.ts'
import { AuthFailures } from '../../../src/security/auth-failures.ts'
import { heartbeatReplySchema } from '../../../src/wire/agent-hello.ts'
import { errorBodySchema } from '../../../src/wire/errors.ts'
import { MAX_JSON_DEPTH } from '../../../src/wire/json-text.ts'
import { broadcastReplySchema } from '../../../src/wire/task.ts'
import { clientListSchema, healthzSchema, statusSchema } from '../../../src/wire/views.ts'
import { FakeClock } from '../../support/fake-clock.ts'
import { answers, FakeTransport, failsWith, hangs, settle, taskCore } from '../../support/fake-transport.ts'
import { SEED_CONFIG, TOKEN } from '../../support/helpers.ts'

const BEARER = { authorization: `Bearer ${TOKEN}` }
const JSON_BODY = { 'content-type': 'application/json' }
const MAX_BODY_BYTES = 4096

function appWorld(overrides: Record<string, unknown> = {}) {
  const clock = new FakeClock()
  const settings = makeSettings(parseConfig({ ...SEED_CONFIG, max_body_bytes: MAX_BODY_BYTES, ...overrides }, 'test').config, {
    externalTokens: [],
    failures: new AuthFailures(() => clock.monotonic()),
  })
  const registry = new Registry(settings.regions, healthPolicy(settings.config))
  registry.maxClients = settings.config.max_clients
  const membership = new LocalMembership(registry, () => 'test-instance')
  const stats = new TaskStats()
  const reported: unknown[] = []
  const state = { stopping: false, inFlight: 0 }
  const deps: AppDeps = {
    settings,
    membership,
    registration: {
      settings,
      registry,
      clock,
      onReplaced: () => {},
      isAlive: async () => true,
      conflicts: new NodeConflicts({ log: () => {}, now: () => clock.now(), forgetMs: () => 180_000 }),
    },
    stats,
    clock,
    version: '9.9.9-test',
    startedAtMs: clock.now(),
    inFlight: () => state.inFlight,
    wsConnections: () => 3,
    metrics: {
      httpAgentPools: () => [],
      authFailures: () => ({ failures: 0, throttled: 0 }),
      observations: new Observations(),
      process: () => ({ residentBytes: 1, eventLoopDelayWorstS: 0, eventLoopDelayMeanS: 0 }),
    },
    isStopping: () => state.stopping,
    report: (error) => void reported.push(error),
    cluster: () => ({ mode: 'alone', instance_id: 'test-instance', redis: null, redis_url: null, instances: [] }),
    storedTasks: taskCore().storedTasks(),
    taskFigures: async () => ({ stored: 0, queued: 0, running: 0, evicted: 0 }),
    notReady: () => undefined,
    operator: { registry, clientTasks: new ClientTasks(), log: () => {}, closeSocket: () => {}, instanceUrl: () => undefined },
  }
  const app = createApp(deps)
  /** Bun's server as the heartbeat route sees it: only the peer's address. */
  const env = { requestIP: () => ({ address: '127.0.0.2', family: 'IPv4', port: 50_000 }) } as unknown as Server<unknown>
  const request = (path: string, init: RequestInit = {}) => app.request(path, init, env)
  const heartbeat = (body: unknown, headers: Record<string, string> = JSON_BODY) =>
    request('/client/heartbeat', { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) })
  return { clock, settings, registry, stats, reported, state, deps, request, heartbeat }
}

const HELLO = { ip: '127.0.0.2', node_id: 'east-1', token: TOKEN, region: 'us-east-1', port: 4100 }

async function errorOf(response: Response) {
  expect(response.headers.get('content-type')).toBe('application/json')
  return errorBodySchema.parse(await response.json())
}

describe('http app', () => {
  test('/healthz answers ok', async () => {
    const response = await appWorld().request('/healthz')
    expect(response.status).toBe(200)
    expect(healthzSchema.parse(await response.json())).toEqual({ ok: true })
  })

  test('/status has the documented shape, with the counts, version and uptime of the moment', async () => {
    const world = appWorld()
    await world.heartbeat(HELLO)
    world.registry.announce(
      { holder: 'token-1', nodeId: 'drained', region: 'us-east-1', protocol: 'http', ip: '127.0.0.1', port: 4200, weight: 0 },
      world.clock.now(),
    )
    world.stats.record(
      {
        task_id: 't',
        region: 'usa',
        mode: 'single',
        node_id: null,
        status: 503,
        outcome: 'no_client',
        attempts: 0,
        latency_ms: 1,
        finishedAtMs: world.clock.now(),
      },
      world.clock.now(),
    )
    world.state.inFlight = 2
    world.clock.advance(61_400)
    const status = statusSchema.parse(await (await world.request('/status')).json())
    expect(status).toEqual({
      server: 'Online',
      websocket: 'Connected',
      clients: 2,
      tasks: 2,
      regions: { 'us-east-1': { clients: 2, active: 1, failing: 0 } },
      version: '9.9.9-test',
      uptime_s: 61,
      started_at: new Date(world.deps.startedAtMs).toISOString(),
      tasks_total: 1,
      tasks_failed: 1,
      websocket_connections: 3,
      cluster: 'alone',
      instance_id: 'test-instance',
    })
  })

  test('/status says Stopping while the server stops, and Disabled when WebSocket is off', async () => {
    const world = appWorld({ ws: { ...SEED_CONFIG.ws, enabled: false } })
    world.state.stopping = true
    expect(statusSchema.parse(await (await world.request('/status')).json())).toMatchObject({ server: 'Stopping', websocket: 'Disabled' })
  })

  test('/clients needs a token: 401 without one or with a wrong one', async () => {
    const world = appWorld()
    // A bare token is accepted (as the original Moonlight took it), but not under another scheme.
    for (const headers of [{}, { authorization: 'Bearer wrong-token' }, { authorization: `Basic ${TOKEN}` }, { 'x-token': 'wrong-token' }] as Array<
      Record<string, string>
    >) {
      const response = await world.request('/clients', { headers })
      expect({ headers, status: response.status }).toEqual({ headers, status: 401 })
      expect((await errorOf(response)).code).toBe('unauthorized')
    }
  })

  test('/clients with a token lists each client in the documented shape', async () => {
    const world = appWorld()
    await world.heartbeat(HELLO)
    for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER   ${TOKEN}`]) {
      const response = await world.request('/clients', { headers: { authorization } })
      expect({ authorization, status: response.status }).toEqual({ authorization, status: 200 })
      const { clients } = clientListSchema.parse(await response.json())
      expect(clients).toEqual([
        {
          node_id: 'east-1',
          region: 'us-east-1',
          protocol: 'http',
          ip: '127.0.0.2',
          port: 4100,
          weight: 1,
          state: 'healthy',
          draining: false,
          registered_at: new Date(world.clock.now()).toISOString(),
          last_seen: new Date(world.clock.now()).toISOString(),
          in_flight: 0,
          successes: 0,
          failures: 0,
          consecutive_failures: 0,
          latency_ms: 0,
          ejected_until: null,
        },
      ])
    }
  })

  test('a heartbeat registers the client and is answered 200 in the documented shape', async () => {
    const world = appWorld()
    const response = await world.heartbeat({ ...HELLO, weight: 3 })
    expect(response.status).toBe(200)
    expect(heartbeatReplySchema.parse(await response.json())).toEqual({
      status: 'ok',
      server_time: new Date(world.clock.now()).toISOString(),
      node_id: 'east-1',
      region: 'us-east-1',
      weight: 3,
      client_ttl: 90,
    })
    expect(world.registry.get('east-1')).toMatchObject({ protocol: 'http', ip: '127.0.0.2', port: 4100, weight: 3 })
  })

  test('a heartbeat without an ip registers the address it came from', async () => {
    const world = appWorld()
    const { ip: _ip, ...withoutIp } = HELLO
    expect((await world.heartbeat(withoutIp)).status).toBe(200)
    expect(world.registry.get('east-1')?.ip).toBe('127.0.0.2')
  })

  test('a heartbeat that is not JSON, too deep, or of the wrong shape is 400 with a code', async () => {
    const world = appWorld()
    const notJson = await world.heartbeat('{"node_id":')
    expect(notJson.status).toBe(400)
    expect((await errorOf(notJson)).code).toBe('invalid_json')

    const deep = await world.heartbeat(`${'['.repeat(MAX_JSON_DEPTH + 1)}${']'.repeat(MAX_JSON_DEPTH + 1)}`)
    expect(deep.status).toBe(400)
    expect(await errorOf(deep)).toMatchObject({ code: 'too_deep', max_depth: MAX_JSON_DEPTH })

    const { port: _port, ...withoutPort } = HELLO
    const invalid = await world.heartbeat({ ...withoutPort, region: 'no spaces' })
    expect(invalid.status).toBe(400)
    const body = await errorOf(invalid)
    expect(body.code).toBe('invalid_body')
    expect(body.issues?.map((issue) => issue.path).sort()).toEqual(['port', 'region'])
    expect(world.registry.size).toBe(0)
  })

  test('a heartbeat with a wrong token is 401', async () => {
    const world = appWorld()
    const response = await world.heartbeat({ ...HELLO, token: 'not-a-real-token' })
    expect(response.status).toBe(401)
    expect(await errorOf(response)).toEqual({ error: 'invalid token', code: 'unauthorized' })
    expect(world.registry.size).toBe(0)
  })

  test('a heartbeat not declared JSON is 415, saying what it got', async () => {
    const world = appWorld()
    const response = await world.heartbeat(HELLO, { 'content-type': 'application/x-www-form-urlencoded' })
    expect(response.status).toBe(415)
    expect(await errorOf(response)).toMatchObject({ code: 'unsupported_media_type', received: 'application/x-www-form-urlencoded' })
  })

  test('a heartbeat larger than max_body_bytes is 413', async () => {
    const world = appWorld()
    const response = await world.heartbeat({ ...HELLO, padding: 'x'.repeat(MAX_BODY_BYTES) })
    expect(response.status).toBe(413)
    expect(await errorOf(response)).toMatchObject({ code: 'body_too_large', max_body_bytes: MAX_BODY_BYTES })
  })

  test('a heartbeat from a new node past max_clients is 503 too_many_clients; a known node still refreshes', async () => {
    const world = appWorld({ max_clients: 1 })
    expect((await world.heartbeat(HELLO)).status).toBe(200)
    const refused = await world.heartbeat({ ...HELLO, node_id: 'east-2' })
    expect(refused.status).toBe(503)
    expect(await errorOf(refused)).toMatchObject({ code: 'too_many_clients', max_clients: 1 })
    expect((await world.heartbeat(HELLO)).status).toBe(200)
  })

  test('an unknown route is a JSON 404 with code not_found', async () => {
    const response = await appWorld().request('/nowhere', { method: 'DELETE' })
    expect(response.status).toBe(404)
    expect(await errorOf(response)).toEqual({ error: 'no route for DELETE /nowhere', code: 'not_found' })
  })

  test('an unexpected error is a JSON 500 with code internal, and is reported, not shown', async () => {
    const world = appWorld()
    world.deps.inFlight = () => {
      throw new Error('secret detail')
    }
    const response = await createApp(world.deps).request('/status')
    expect(response.status).toBe(500)
    expect(await errorOf(response)).toEqual({ error: 'internal server error', code: 'internal' })
    expect(world.reported).toMatchObject([{ message: 'secret detail' }])
  })
})

/** The task route with a real dispatcher and broadcaster over fake transports. */
function taskRouteWorld(options: { http?: FakeTransport; config?: Record<string, unknown> } = {}) {
  const settings = makeSettings(parseConfig({ ...SEED_CONFIG, max_body_bytes: MAX_BODY_BYTES, ...options.config }, 'test').config, {
    externalTokens: [],
    failures: new AuthFailures(() => 0),
  })
  // The dispatcher follows the same config, as the server wires it.
  const core = taskCore({ http: options.http, settings: { retryCount: settings.config.retry_count, taskTimeoutMs: settings.config.task_timeout * 1000 } })
  const reported: unknown[] = []
  const state = { stopping: false }
  const route = createTaskRoute({
    settings,
    dispatcher: core.dispatcher,
    broadcaster: core.broadcaster,
    // One task per world: a fixed id the answers below can name.
    taskIds: { next: () => 'test-1' },
    storedTasks: core.storedTasks(),
    now: () => core.clock.now(),
    isStopping: () => state.stopping,
    report: (error) => void reported.push(error),
  })
  /** Requests whose idle timeout the route lifted (server.timeout(request, 0)). */
  const untimed: Request[] = []
  const server = {
    timeout: (request: Request, seconds: number) => {
      if (seconds === 0) untimed.push(request)
    },
    // Failed authentications are counted by the peer's address.
    requestIP: () => ({ address: '127.0.0.1', family: 'IPv4', port: 50_000 }),
  } as unknown as Server<unknown>
  const post = (body: unknown, headers: Record<string, string> = { ...JSON_BODY, ...BEARER }) => {
    const request = new Request('http://127.0.0.1/task/request', { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) })
    return { request, response: route(request, server) }
  }
  const send = async (body: unknown, headers?: Record<string, string>) => post(body, headers).response
  return { ...core, settings, reported, state, untimed, route, server, post, send }
}

describe('task route', () => {
  test("an answered task is the client's own answer, with X-Task-ID, X-Moonlight-Node and X-Moonlight-Attempts", async () => {
    const http = new FakeTransport({ a: answers(500, 'broken'), b: answers(201, 'made it', { 'content-type': 'text/plain; charset=utf-8', 'x-agent': 'b' }) })
    const world = taskRouteWorld({ http })
    world.join('a', 'usa')
    world.join('b', 'usa')
    const response = await world.send('{"region": "usa", "payload": {"n": 12345678901234567890}}')
    expect(response.status).toBe(201)
    expect(await response.text()).toBe('made it')
    expect(response.headers.toJSON()).toEqual({
      'content-security-policy': 'sandbox',
      'x-content-type-options': 'nosniff',
      'content-type': 'text/plain; charset=utf-8',
      'x-agent': 'b',
      'x-task-id': 'test-1',
      'x-moonlight-node': 'b',
      'x-moonlight-attempts': '2',
    })
    // The payload reaches the client as the caller wrote it.
    expect(http.sent.map((task) => [task.nodeId, task.taskId, task.payloadJson])).toEqual([
      ['a', 'test-1', '{"n": 12345678901234567890}'],
      ['b', 'test-1', '{"n": 12345678901234567890}'],
    ])
  })

  test("a task lifts Bun's idle timeout for its own request; a refused one does not", async () => {
    const world = taskRouteWorld()
    world.join('a', 'usa')
    const accepted = world.post({ payload: 1 })
    await accepted.response
    await world.send({ payload: 1 }, JSON_BODY)
    expect(world.untimed).toEqual([accepted.request])
  })

  test('without a valid token it is 401; with require_task_token off no token is needed', async () => {
    const world = taskRouteWorld()
    world.join('a', 'usa')
    for (const headers of [JSON_BODY, { ...JSON_BODY, authorization: 'Bearer wrong-token' }]) {
      const response = await world.send({ payload: 1 }, headers)
      expect(response.status).toBe(401)
      expect((await errorOf(response)).code).toBe('unauthorized')
    }
    expect(world.transports.http.sent).toEqual([])

    const open = taskRouteWorld({ config: { require_task_token: false } })
    open.join('a', 'usa')
    expect((await open.send({ payload: 1 }, JSON_BODY)).status).toBe(200)
  })

  test('a body not declared JSON is 415', async () => {
    const response = await taskRouteWorld().send('payload=1', { ...BEARER, 'content-type': 'application/x-www-form-urlencoded' })
    expect(response.status).toBe(415)
    expect(await errorOf(response)).toMatchObject({ code: 'unsupported_media_type', received: 'application/x-www-form-urlencoded' })
  })

  test('a body over max_body_bytes is 413, whether its length is declared or it streams', async () => {
    const world = taskRouteWorld()
    const text = JSON.stringify({ payload: 'x'.repeat(MAX_BODY_BYTES) })
    const declared = await world.send(text, { ...JSON_BODY, ...BEARER, 'content-length': String(text.length) })
    expect(declared.status).toBe(413)
    expect(await errorOf(declared)).toMatchObject({ code: 'body_too_large', max_body_bytes: MAX_BODY_BYTES })

    const bytes = new TextEncoder().encode(text)
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += 1000) controller.enqueue(bytes.slice(at, at + 1000))
        controller.close()
      },
    })
    const streamed = await world.route(
      new Request('http://127.0.0.1/task/request', { method: 'POST', headers: { ...JSON_BODY, ...BEARER }, body: stream }),
      world.server,
    )
    expect(streamed.status).toBe(413)
    expect((await errorOf(streamed)).code).toBe('body_too_large')
  })

  test('a body that is not JSON is 400 invalid_json', async () => {
    const response = await taskRouteWorld().send('{"payload": ')
    expect(response.status).toBe(400)
    expect((await errorOf(response)).code).toBe('invalid_json')
  })

  test('a payload nested deeper than 1000 levels is 400 too_deep; 1000 levels pass', async () => {
    const world = taskRouteWorld()
    world.join('a', 'usa')
    // The body object is one level, so a payload of n arrays nests n + 1 deep.
    const nested = (levels: number) => `{"payload":${'['.repeat(levels)}${']'.repeat(levels)}}`
    const deep = await world.send(nested(MAX_JSON_DEPTH))
    expect(deep.status).toBe(400)
    expect(await errorOf(deep)).toMatchObject({ code: 'too_deep', max_depth: MAX_JSON_DEPTH })
    expect((await world.send(nested(MAX_JSON_DEPTH - 1))).status).toBe(200)
  })

  test('a body of the wrong shape is 400 invalid_body listing each field', async () => {
    const world = taskRouteWorld()
    const missing = await errorOf(await world.send({ region: 'usa' }))
    expect(missing).toMatchObject({ code: 'invalid_body', issues: [{ path: 'payload', message: 'payload is required' }] })
    const wrong = await errorOf(await world.send({ payload: 1, region: 'two words', mode: 'all' }))
    expect(wrong.code).toBe('invalid_body')
    expect(wrong.issues?.map((issue) => issue.path).sort()).toEqual(['mode', 'region'])
    expect(world.transports.http.sent).toEqual([])
  })

  test('a task while the server stops is 503 shutting_down', async () => {
    const world = taskRouteWorld()
    world.join('a', 'usa')
    world.state.stopping = true
    const response = await world.send({ payload: 1 })
    expect(response.status).toBe(503)
    expect((await errorOf(response)).code).toBe('shutting_down')
    expect(world.transports.http.sent).toEqual([])
  })

  test('each way a task fails is its documented error, with X-Task-ID', async () => {
    const none = await taskRouteWorld().send({ region: 'usa', payload: 1 })
    expect(none.status).toBe(503)
    expect(none.headers.get('x-task-id')).toBe('test-1')
    expect(await errorOf(none)).toMatchObject({ code: 'no_client', region: 'usa' })

    const failing = taskRouteWorld({ http: new FakeTransport(answers(500, 'disk full')), config: { retry_count: 0 } })
    failing.join('a', 'usa')
    const failed = await failing.send({ region: 'usa', payload: 1 })
    expect(failed.status).toBe(502)
    expect(await errorOf(failed)).toMatchObject({
      code: 'all_attempts_failed',
      attempts: [{ node_id: 'a', kind: 'status', reason: 'answered 500', status: 500, body: 'disk full' }],
    })

    const slow = taskRouteWorld({ http: new FakeTransport(hangs()), config: { task_timeout: 2 } })
    slow.join('a', 'usa')
    const pending = slow.send({ region: 'usa', payload: 1 })
    // The route reads the body before it dispatches: let it get to the transport first.
    for (let turn = 0; turn < 100 && slow.transports.http.sent.length === 0; turn++) await settle()
    expect(slow.transports.http.sentTo).toEqual(['a'])
    slow.clock.advance(2000)
    const timedOut = await pending
    expect(timedOut.status).toBe(504)
    expect(await errorOf(timedOut)).toMatchObject({ code: 'timeout', error: 'no answer within task_timeout (2 s)' })
  })

  test('an empty, "global" or "default" region means anywhere', async () => {
    const world = taskRouteWorld()
    world.join('eu', 'eu-west-1')
    for (const region of ['', 'global', 'default']) {
      const response = await world.send({ region, payload: 1 })
      expect({ region, status: response.status, node: response.headers.get('x-moonlight-node') }).toEqual({ region, status: 200, node: 'eu' })
    }
  })

  test("a broadcast answers every client's part, each JSON answer as its own text", async () => {
    const http = new FakeTransport({ a: answers(200, '{"big": 12345678901234567890}'), b: answers(500, 'broken', { 'content-type': 'text/plain' }) })
    const world = taskRouteWorld({ http })
    world.join('a', 'usa')
    world.join('b', 'usa')
    const response = await world.send({ region: 'usa', mode: 'broadcast', payload: 1 })
    expect(response.status).toBe(200)
    expect(response.headers.get('x-task-id')).toBe('test-1')
    const text = await response.text()
    expect(text).toContain('"response":{"big": 12345678901234567890}')
    expect(broadcastReplySchema.parse(JSON.parse(text))).toMatchObject({
      task_id: 'test-1',
      region: 'usa',
      targets: 2,
      answered: 2,
      results: [
        { node_id: 'a', protocol: 'http', status: 200 },
        { node_id: 'b', protocol: 'http', status: 500, response: 'broken' },
      ],
    })
  })

  test('a broadcast with nobody to ask is 503 no_client; one nobody answered is 502', async () => {
    const empty = await taskRouteWorld().send({ region: 'usa', mode: 'broadcast', payload: 1 })
    expect(empty.status).toBe(503)
    expect(await errorOf(empty)).toMatchObject({ code: 'no_client', region: 'usa' })

    const world = taskRouteWorld({ http: new FakeTransport(failsWith('unreachable', 'down')) })
    world.join('a', 'usa')
    const nobody = await world.send({ region: 'usa', mode: 'broadcast', payload: 1 })
    expect(nobody.status).toBe(502)
    expect(broadcastReplySchema.parse(await nobody.json())).toMatchObject({ answered: 0, results: [{ node_id: 'a', status: 502, error: 'down' }] })
  })
})
