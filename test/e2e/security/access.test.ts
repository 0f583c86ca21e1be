import { describe, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { openWs, postJson, postTask, startHttpAgent, startWsAgent, type TestServer, TOKEN, testScope } from '../../support/helpers.ts'

/** Roles and tokens over HTTP and WebSocket, through the real server and real agents. */

const AGENT = 'agent-token-aaaa'
const SUBMIT = 'submit-token-bbbb'
const MONITOR = 'monitor-token-cccc'
const ADMIN = 'admin-token-dddd'
const HASHED = 'hashed-token-eeee'
const EAST_AGENT = 'east-agent-ffff'
const EAST_SUBMIT = 'east-submit-gggg'
const ROOT_SUBMIT = 'root-submit-hhhh'
const ALL_TOKENS = [AGENT, SUBMIT, MONITOR, ADMIN, HASHED, EAST_AGENT, EAST_SUBMIT, ROOT_SUBMIT, TOKEN]

const ACCESS = [
  { token: AGENT, roles: ['agent' as const] },
  { token: SUBMIT, roles: ['submit' as const] },
  { token: MONITOR, roles: ['monitor' as const] },
  { token: ADMIN, roles: ['admin' as const] },
  { token_sha256: createHash('sha256').update(HASHED).digest('hex'), roles: ['submit' as const, 'monitor' as const] },
  { token: EAST_AGENT, roles: ['agent' as const], regions: ['usa'] },
  { token: EAST_SUBMIT, roles: ['submit' as const], regions: ['us-east-1'] },
  { token: ROOT_SUBMIT, roles: ['submit' as const], regions: ['global'] },
]

const scope = testScope()

/** The seed's config (its `tokens` included) plus the access entries, with an HTTP agent in us-east-1 and one in eu-west-1. */
async function start(): Promise<TestServer> {
  const mls = scope.server({ access: ACCESS })
  for (const [nodeId, region] of [
    ['east', 'us-east-1'],
    ['west', 'eu-west-1'],
  ] as const) {
    const agent = await startHttpAgent(mls.url, { nodeId, region })
    scope.defer(agent.stop)
  }
  return mls
}

const clients = (mls: TestServer, token: string) => fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${token}` } })

const heartbeat = (mls: TestServer, token: string, region = 'us-east-1', nodeId = `hb-${token}`) =>
  postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: nodeId, token, region, port: 9 })

/** A WebSocket `register` or `monitor` with `token`: "ok", or the error frame's code and the close code. */
async function overWs(mls: TestServer, type: 'register' | 'monitor', token: string, region = 'us-east-1'): Promise<string> {
  const peer = await openWs(mls.wsUrl)
  scope.defer(peer.close)
  const payload = type === 'monitor' ? { token } : { node_id: `ws-${token}-${region}`, token, region, port: 1 }
  peer.send({ type, payload })
  const answer = await peer.next()
  if (answer.type === (type === 'monitor' ? 'monitor_ok' : 'registered')) return 'ok'
  expect(answer.payload.message).not.toContain(token)
  return `${answer.payload.code} ${(await peer.closed).code}`
}

async function status(response: Response | Promise<Response | { status: number }>): Promise<number> {
  return (await response).status
}

describe('each role over HTTP and WebSocket', () => {
  test('an agent token registers (heartbeat and WebSocket) but cannot submit, list clients or open the monitor feed', async () => {
    const mls = await start()
    expect(await status(heartbeat(mls, AGENT))).toBe(200)
    expect(await overWs(mls, 'register', AGENT)).toBe('ok')
    const submitted = await postTask(mls.url, { region: 'us-east-1', payload: 1 }, AGENT)
    expect(submitted.status).toBe(403)
    expect(submitted.json()).toEqual({ error: 'this token does not hold the "submit" role, needed to submit tasks', code: 'forbidden', role: 'submit' })
    const listed = await clients(mls, AGENT)
    expect(listed.status).toBe(403)
    expect(await listed.json()).toMatchObject({ code: 'forbidden', role: 'monitor' })
    expect(await overWs(mls, 'monitor', AGENT)).toBe('forbidden 1008')
  })

  test('a submit token sends tasks but cannot register (heartbeat or WebSocket) or open the monitor feed or the client list', async () => {
    const mls = await start()
    const task = await postTask(mls.url, { region: 'us-east-1', payload: 1 }, SUBMIT)
    expect(task.status).toBe(200)
    expect(task.json()).toEqual({ node: 'east', echo: 1 })
    const refused = await heartbeat(mls, SUBMIT)
    expect(refused.status).toBe(403)
    expect(refused.json()).toEqual({ error: 'this token does not hold the "agent" role, needed to register agents', code: 'forbidden', role: 'agent' })
    expect(mls.server.registry.get(`hb-${SUBMIT}`)).toBeUndefined()
    expect(await overWs(mls, 'register', SUBMIT)).toBe('forbidden 1008')
    expect(await overWs(mls, 'monitor', SUBMIT)).toBe('forbidden 1008')
    expect(await status(clients(mls, SUBMIT))).toBe(403)
  })

  test('a monitor token lists clients and joins the feed but cannot submit or register', async () => {
    const mls = await start()
    const listed = await clients(mls, MONITOR)
    expect(listed.status).toBe(200)
    expect((await listed.json()).clients.map((client: { node_id: string }) => client.node_id).sort()).toEqual(['east', 'west'])
    expect(await overWs(mls, 'monitor', MONITOR)).toBe('ok')
    expect(await status(postTask(mls.url, { payload: 1 }, MONITOR))).toBe(403)
    expect(await status(heartbeat(mls, MONITOR))).toBe(403)
    expect(await overWs(mls, 'register', MONITOR)).toBe('forbidden 1008')
  })

  test('an admin token and the seed tokens can do everything', async () => {
    const mls = await start()
    for (const token of [ADMIN, TOKEN, 'supersecrettokenox1']) {
      expect({ token, task: (await postTask(mls.url, { region: 'eu-west-1', payload: 2 }, token)).status }).toEqual({ token, task: 200 })
      expect({ token, clients: await status(clients(mls, token)) }).toEqual({ token, clients: 200 })
      expect({ token, heartbeat: await status(heartbeat(mls, token)) }).toEqual({ token, heartbeat: 200 })
      expect({ token, register: await overWs(mls, 'register', token) }).toEqual({ token, register: 'ok' })
      expect({ token, monitor: await overWs(mls, 'monitor', token) }).toEqual({ token, monitor: 'ok' })
    }
  })

  test('a token_sha256 entry accepts the token it hashes, with its roles', async () => {
    const mls = await start()
    expect(await status(postTask(mls.url, { payload: 3 }, HASHED))).toBe(200)
    expect(await status(clients(mls, HASHED))).toBe(200)
    expect(await overWs(mls, 'monitor', HASHED)).toBe('ok')
    expect(await status(heartbeat(mls, HASHED))).toBe(403)
    // The digest itself is not a token.
    expect(await status(postTask(mls.url, { payload: 3 }, ACCESS[4]?.token_sha256 ?? ''))).toBe(401)
  })

  test('an unknown token is 401 over HTTP and invalid_token with close 1008 over WebSocket, on register and monitor alike', async () => {
    const mls = await start()
    expect(await status(postTask(mls.url, { payload: 1 }, 'unknown-token-zzzz'))).toBe(401)
    expect(await status(clients(mls, 'unknown-token-zzzz'))).toBe(401)
    expect(await status(heartbeat(mls, 'unknown-token-zzzz'))).toBe(401)
    expect(await overWs(mls, 'register', 'unknown-token-zzzz')).toBe('invalid_token 1008')
    expect(await overWs(mls, 'monitor', 'unknown-token-zzzz')).toBe('invalid_token 1008')
  })

  test('with require_task_token false a task needs no token, and a restricted one is not held to its regions', async () => {
    const mls = scope.server({ access: ACCESS, require_task_token: false })
    const agent = await startHttpAgent(mls.url, { nodeId: 'east', region: 'us-east-1' })
    scope.defer(agent.stop)
    expect(await status(postTask(mls.url, { region: 'us-east-1', payload: 1 }, null))).toBe(200)
    expect(await status(postTask(mls.url, { region: 'usa', payload: 1 }, EAST_SUBMIT))).toBe(200)
    // Heartbeats and the client list still need their roles.
    expect(await status(clients(mls, SUBMIT))).toBe(403)
  })
})

describe('region limits', () => {
  test('an agent token limited to usa registers in usa and under it, over HTTP and WebSocket, and nowhere else', async () => {
    const mls = await start()
    expect(await status(heartbeat(mls, EAST_AGENT, 'us-east-1'))).toBe(200)
    expect(await status(heartbeat(mls, EAST_AGENT, 'usa', 'at-usa'))).toBe(200)
    expect(await overWs(mls, 'register', EAST_AGENT, 'us-west-1')).toBe('ok')
    const refused = await heartbeat(mls, EAST_AGENT, 'eu-west-1', 'in-europe')
    expect(refused.status).toBe(403)
    expect(refused.json()).toEqual({ error: 'this token may not register agents in region "eu-west-1"', code: 'forbidden', region: 'eu-west-1' })
    expect(mls.server.registry.get('in-europe')).toBeUndefined()
    expect(await overWs(mls, 'register', EAST_AGENT, 'eu-west-1')).toBe('forbidden 1008')
    expect(await overWs(mls, 'register', EAST_AGENT, 'global')).toBe('forbidden 1008')
  })

  test('a submit token limited to us-east-1 sends there and not to usa, eu-west-1 or without a region; one allowed "global" sends anywhere', async () => {
    const mls = await start()
    expect(await status(postTask(mls.url, { region: 'us-east-1', payload: 1 }, EAST_SUBMIT))).toBe(200)
    for (const region of ['usa', 'eu-west-1', 'global', undefined]) {
      const refused = await postTask(mls.url, { ...(region === undefined ? {} : { region }), payload: 1 }, EAST_SUBMIT)
      expect({ region, status: refused.status, body: refused.json() }).toEqual({
        region,
        status: 403,
        body: { error: `this token may not send tasks to region "${region ?? 'global'}"`, code: 'forbidden', region: region ?? 'global' },
      })
    }
    // A broadcast to usa would reach beyond us-east-1.
    expect(await status(postTask(mls.url, { region: 'usa', mode: 'broadcast', payload: 1 }, EAST_SUBMIT))).toBe(403)
    expect(await status(postTask(mls.url, { region: 'us-east-1', mode: 'broadcast', payload: 1 }, EAST_SUBMIT))).toBe(200)
    for (const region of ['global', 'eu-west-1', 'us-east-1']) {
      expect({ region, status: (await postTask(mls.url, { region, payload: 1 }, ROOT_SUBMIT)).status }).toEqual({ region, status: 200 })
    }
    // The agents got only the five tasks that passed.
    const answered = (nodeId: string) => mls.server.registry.get(nodeId)?.successes ?? 0
    expect(answered('east') + answered('west')).toBe(5)
  })
})

describe('refusals never show a token', () => {
  test('no 401 or 403 body names the token presented', async () => {
    const mls = await start()
    const bodies: string[] = []
    for (const token of [...ALL_TOKENS, 'unknown-token-zzzz']) {
      bodies.push((await postTask(mls.url, { region: 'eu-west-1', payload: 1 }, token)).text)
      bodies.push(await (await clients(mls, token)).text())
      bodies.push((await heartbeat(mls, token, 'eu-west-1')).text)
      const refused = bodies.filter((body) => /"code":"(forbidden|unauthorized)"/.test(body))
      for (const body of refused) expect({ body, leaks: body.includes(token) }).toEqual({ body, leaks: false })
    }
    expect(bodies.filter((body) => body.includes('"forbidden"')).length).toBeGreaterThan(10)
  })
})

describe('a registered WebSocket agent with an agent token gets tasks', () => {
  test('register with an agent token, then answer a task sent with a submit token', async () => {
    const mls = scope.server({ access: ACCESS })
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'ws-east', region: 'us-east-1', token: EAST_AGENT })
    scope.defer(agent.close)
    const task = await postTask(mls.url, { region: 'us-east-1', payload: 7 }, EAST_SUBMIT)
    expect(task.status).toBe(200)
    expect(task.json()).toEqual({ node: 'ws-east', echo: 7 })
  })
})
