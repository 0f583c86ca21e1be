/** The ways the original Moonlight took a token — X-Token, a bare Authorization, ?token= on the WebSocket URL — with the same checks as a bearer token. */
import { describe, expect, test } from 'bun:test'
import { openWs, postTask, spawnServer, startHttpAgent, type TestServer, TOKEN, testScope } from '../../support/helpers.ts'
import { startOriginalWsClient } from '../../support/original-clients.ts'

const scope = testScope()
const EAST_ONLY = 'east-only-submit-token-0'
const MONITOR = 'monitor-only-token-00000'

async function start(overrides: Parameters<typeof scope.server>[0] = {}): Promise<TestServer> {
  const mls = scope.server({
    access: [
      { token: EAST_ONLY, roles: ['submit'], regions: ['us-east-1'] },
      { token: MONITOR, roles: ['monitor'] },
    ],
    ...overrides,
  })
  const agent = await startHttpAgent(mls.url, { nodeId: 'east', region: 'us-east-1' })
  scope.defer(agent.stop)
  return mls
}

function task(mls: TestServer, headers: Record<string, string>, region = 'us-east-1'): Promise<Response> {
  return fetch(`${mls.url}/task/request`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ region, payload: { hello: 1 } }),
  })
}

describe('tokens as the original Moonlight took them, over HTTP', () => {
  test('X-Token and a bare Authorization send a task like a bearer token', async () => {
    const mls = await start()
    const ways: Array<Record<string, string>> = [{ 'x-token': TOKEN }, { authorization: TOKEN }, { authorization: `Bearer ${TOKEN}` }]
    for (const headers of ways) {
      const answer = await task(mls, headers)
      expect({ headers, status: answer.status }).toEqual({ headers, status: 200 })
      expect(await answer.json()).toEqual({ node: 'east', echo: { hello: 1 } })
    }
  })

  test('the same checks: an unknown token is 401, a role or region it lacks is 403, with the usual JSON error', async () => {
    const mls = await start()
    const unknown = await task(mls, { 'x-token': 'not-a-token' })
    expect(unknown.status).toBe(401)
    expect(await unknown.json()).toMatchObject({ code: 'unauthorized' })
    expect((await task(mls, { authorization: 'not-a-token' })).status).toBe(401)
    const elsewhere = await task(mls, { 'x-token': EAST_ONLY }, 'eu-west-1')
    expect(elsewhere.status).toBe(403)
    expect(await elsewhere.json()).toMatchObject({ code: 'forbidden', region: 'eu-west-1' })
    expect((await task(mls, { authorization: EAST_ONLY })).status).toBe(200)
    // /clients needs the monitor role, whichever header carries the token.
    expect((await fetch(`${mls.url}/clients`, { headers: { 'x-token': EAST_ONLY } })).status).toBe(403)
    expect((await fetch(`${mls.url}/clients`, { headers: { 'x-token': MONITOR } })).status).toBe(200)
    expect((await fetch(`${mls.url}/clients`, { headers: { authorization: MONITOR } })).status).toBe(200)
    // Another scheme is not a bare token.
    expect((await fetch(`${mls.url}/clients`, { headers: { authorization: `Basic ${MONITOR}` } })).status).toBe(401)
  })

  test('wrong X-Tokens count as failed authentications: throttled after auth.max_failures', async () => {
    const mls = await start({ auth: { max_failures: 3, window: 60 } })
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) statuses.push((await task(mls, { 'x-token': `wrong-${i}` })).status)
    expect(statuses).toEqual([401, 401, 401, 429, 429])
  })

  test('a stored task belongs to its token whichever header brought it', async () => {
    const mls = await start()
    const submitted = await fetch(`${mls.url}/task/request`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-token': EAST_ONLY },
      body: JSON.stringify({ region: 'us-east-1', mode: 'async', payload: 7 }),
    })
    expect(submitted.status).toBe(202)
    const { task_id } = (await submitted.json()) as { task_id: string }
    expect((await fetch(`${mls.url}/task/${task_id}`, { headers: { authorization: EAST_ONLY } })).status).toBe(200)
    expect((await fetch(`${mls.url}/task/${task_id}`, { headers: { 'x-token': MONITOR } })).status).toBe(403)
  })
})

describe('?token= on the WebSocket URL', () => {
  test('an unmodified client whose register carries no token registers with the URL token, and gets tasks', async () => {
    const mls = scope.server()
    const client = startOriginalWsClient(`${mls.wsUrl}?token=${TOKEN}`, { nodeId: 'url-token', region: 'usa', token: null })
    scope.defer(client.close)
    await client.registered
    expect((await postTask(mls.url, { region: 'usa', payload: 'x' })).status).toBeGreaterThanOrEqual(200)
    expect(mls.server.registry.get('url-token')?.region).toBe('usa')
  })

  test('the same checks: a bad URL token is refused and closed with 1008, and counts as a failure', async () => {
    const mls = scope.server({ auth: { max_failures: 2, window: 60 } })
    const codes: string[] = []
    for (let i = 0; i < 3; i++) {
      const peer = await openWs(`${mls.wsUrl}?token=wrong-${i}`)
      scope.defer(peer.close)
      peer.send({ type: 'register', payload: { node_id: `bad-${i}`, region: 'usa' } })
      codes.push(`${(await peer.next('error')).payload.code} ${(await peer.closed).code}`)
    }
    expect(codes).toEqual(['invalid_token 1008', 'invalid_token 1008', 'too_many_failures 1008'])
  })

  test('a register without a token and no URL token is refused', async () => {
    const mls = scope.server()
    const peer = await openWs(mls.wsUrl)
    scope.defer(peer.close)
    peer.send({ type: 'register', payload: { node_id: 'no-token', region: 'usa' } })
    expect((await peer.next('error')).payload.code).toBe('invalid_token')
    expect((await peer.closed).code).toBe(1008)
  })

  test('a token in register wins over the URL, whose own region rights do not widen it', async () => {
    const mls = scope.server({ access: [{ token: 'agent-in-asia-only-0000', roles: ['agent'], regions: ['asia'] }] })
    const peer = await openWs(`${mls.wsUrl}?token=${TOKEN}`)
    scope.defer(peer.close)
    peer.send({ type: 'register', payload: { node_id: 'mixed', token: 'agent-in-asia-only-0000', region: 'usa' } })
    expect((await peer.next('error')).payload.code).toBe('forbidden')
  })

  test('the URL token never reaches the log', async () => {
    const secret = 'url-token-that-must-stay-secret'
    const server = await spawnServer(['--port', '0', '--host', '127.0.0.1'], { env: { MLS_TOKENS: secret } })
    scope.defer(() => server.kill('SIGKILL'))
    const wsUrl = `${server.url.replace(/^http/, 'ws').replace(/\/$/, '')}/ws?token=${secret}`
    // Two agents with one node id: the second is refused, and that conflict is logged with both addresses.
    const first = await openWs(wsUrl)
    scope.defer(first.close)
    first.send({ type: 'register', payload: { node_id: 'secretive', region: 'usa' } })
    expect((await first.next()).type).toBe('registered')
    const second = await openWs(wsUrl)
    scope.defer(second.close)
    second.send({ type: 'register', payload: { node_id: 'secretive', region: 'usa' } })
    expect((await second.next('error', 5000)).payload.code).toBe('node_id_in_use')
    await server.waitForOutput('node_id conflict')
    expect(server.output()).not.toContain(secret)
  })
})
