/** Operator actions on a client over HTTP (drain, undrain, eject, forget) and its detail, against the real server and real agents. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import { startServer } from '../../../src/server/server.ts'
import { errorBodySchema } from '../../../src/wire/errors.ts'
import { clientDetailSchema } from '../../../src/wire/views.ts'
import { postTask, SEED_CONFIG, startHttpAgent, startWsAgent, type TestServer, TOKEN, waitFor } from '../../support/helpers.ts'

const MONITOR_ONLY = 'monitor-only-token-0123456789'
const lines: string[] = []

async function act(url: string, path: string, method = 'POST', token: string | null = TOKEN, body?: unknown) {
  const headers: Record<string, string> = {}
  if (token !== null) headers.authorization = `Bearer ${token}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(`${url}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  return { status: response.status, body: (await response.json()) as any }
}

describe('operator actions', () => {
  let mls: TestServer
  beforeAll(() => {
    // The log is where an operator looks for who did what: captured.
    const raw = { ...SEED_CONFIG, access: [{ token: MONITOR_ONLY, roles: ['monitor'] }], health: { failures_to_eject: 1 } }
    const server = startServer({ loaded: parseConfig(raw, 'test'), port: 0, host: '127.0.0.1', log: (line) => void lines.push(line) })
    mls = { server, url: server.url, wsUrl: `${server.url.replace(/^http/, 'ws')}${server.settings.config.ws.path}`, stop: () => server.stop(0) }
  })
  afterAll(() => mls?.stop())

  test('drain keeps a client out of the rotation across its heartbeats, undrain brings it back', async () => {
    const agent = await startHttpAgent(mls.url, { nodeId: 'op-http-1', region: 'eu-west-1' })
    try {
      const drained = await act(mls.url, '/clients/op-http-1/drain')
      expect(drained.status).toBe(200)
      expect(drained.body.client).toMatchObject({ node_id: 'op-http-1', draining: true, drained_by_operator: true, weight: 1 })
      // A heartbeat announces weight 1 again: the drain stays.
      await agent.heartbeat()
      const task = await postTask(mls.url, { region: 'eu-west-1', payload: { n: 1 } })
      expect(task.status).toBe(503)
      expect(task.json().code).toBe('no_client')

      const undrained = await act(mls.url, '/clients/op-http-1/undrain')
      expect(undrained.body.client).toMatchObject({ draining: false, weight: 1 })
      expect(undrained.body.client.drained_by_operator).toBeUndefined()
      expect(lines.filter((line) => line.includes('op-http-1') && line.startsWith('[mls] operator:'))).toEqual([
        '[mls] operator: drained http client op-http-1 (eu-west-1)',
        '[mls] operator: undrained http client op-http-1 (eu-west-1)',
      ])
      expect((await postTask(mls.url, { region: 'eu-west-1', payload: { n: 2 } })).status).toBe(200)
    } finally {
      agent.stop()
    }
  })

  test('eject takes a client out for the seconds asked, then it is on probation', async () => {
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'op-ws-1', region: 'us-east-1' })
    try {
      const ejected = await act(mls.url, '/clients/op-ws-1/eject', 'POST', TOKEN, { seconds: 1 })
      expect(ejected.status).toBe(200)
      expect(ejected.body.client.state).toBe('ejected')
      const until = Date.parse(ejected.body.client.ejected_until) - Date.now()
      expect(until).toBeGreaterThan(0)
      expect(until).toBeLessThanOrEqual(1000)
      // Ejected: a task for its region does not reach it (whatever an ancestor's clients answer).
      await postTask(mls.url, { region: 'us-east-1', payload: 1 })
      expect(agent.received).toEqual([])
      await waitFor(async () => (await act(mls.url, '/clients/op-ws-1', 'GET')).body.client.state === 'probation', 'the back-off to end', 5000)

      // Without a body: health.ejection_time.
      const byDefault = await act(mls.url, '/clients/op-ws-1/eject')
      expect(Date.parse(byDefault.body.client.ejected_until) - Date.now()).toBeGreaterThan(mls.server.settings.config.health.ejection_time * 1000 - 2000)
      const bad = await act(mls.url, '/clients/op-ws-1/eject', 'POST', TOKEN, { seconds: -3 })
      expect(bad.status).toBe(400)
      expect(bad.body.code).toBe('invalid_body')
    } finally {
      agent.close()
    }
  })

  test("a drain and an eject last across a WebSocket agent's reconnect, even once its old connection is gone", async () => {
    for (const [nodeId, action, body, expected] of [
      ['op-ws-drain', 'drain', undefined, { draining: true, drained_by_operator: true }],
      ['op-ws-eject', 'eject', { seconds: 60 }, { state: 'ejected' }],
    ] as const) {
      const first = await startWsAgent(mls.wsUrl, { nodeId, region: 'us-west-1' })
      expect((await act(mls.url, `/clients/${nodeId}/${action}`, 'POST', TOKEN, body)).status).toBe(200)
      first.close()
      await waitFor(() => mls.server.registry.get(nodeId) === undefined, 'the old connection gone')
      const second = await startWsAgent(mls.wsUrl, { nodeId, region: 'us-west-1' })
      try {
        const view = (await act(mls.url, `/clients/${nodeId}`, 'GET')).body.client
        const task = await postTask(mls.url, { region: 'us-west-1', payload: 1, fallback: 'none' })
        expect({ nodeId, view, status: task.status, got: second.received.length }).toMatchObject({ nodeId, view: expected, status: 503, got: 0 })
      } finally {
        second.close()
      }
    }
  })

  test('forget removes the client and disconnects a WebSocket agent', async () => {
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'op-ws-2', region: 'us-east-1' })
    const forgotten = await act(mls.url, '/clients/op-ws-2', 'DELETE')
    expect(forgotten).toEqual({ status: 200, body: { forgotten: 'op-ws-2' } })
    expect(mls.server.registry.get('op-ws-2')).toBeUndefined()
    expect((await agent.closed).code).toBe(4003)
    expect(lines).toContain('[mls] operator: forgot ws client op-ws-2 (us-east-1)')
    expect((await act(mls.url, '/clients/op-ws-2', 'GET')).status).toBe(404)
  })

  test('an HTTP agent forgotten mid-task and back by its next heartbeat keeps to its max_in_flight: the running task still holds its slot', async () => {
    let running = 0
    const { promise: gate, resolve: open } = Promise.withResolvers<void>()
    const agent = await startHttpAgent(mls.url, {
      nodeId: 'op-forget-http',
      region: 'ap-southeast-1',
      work: async (payload) => {
        running++
        await gate
        running--
        return Response.json({ payload })
      },
    })
    try {
      expect((await agent.heartbeat({ max_in_flight: 1 })).status).toBe(200)
      const first = postTask(mls.url, { region: 'ap-southeast-1', payload: 'a', fallback: 'none' })
      await waitFor(() => running === 1, 'the first task on the agent')
      expect((await act(mls.url, '/clients/op-forget-http', 'DELETE')).status).toBe(200)
      expect((await agent.heartbeat({ max_in_flight: 1 })).status).toBe(200)
      const second = postTask(mls.url, { region: 'ap-southeast-1', payload: 'b', fallback: 'none', queue_timeout: 5 })
      await Bun.sleep(300)
      // The second waits for the slot the first still holds: never two at once on a one-slot agent.
      expect(running).toBe(1)
      open()
      expect([(await first).status, (await second).status]).toEqual([200, 200])
      const clients = (await act(mls.url, '/clients', 'GET')).body.clients as Array<{ node_id: string; in_flight: number }>
      expect(clients.find((client) => client.node_id === 'op-forget-http')?.in_flight).toBe(0)
    } finally {
      open()
      agent.stop()
    }
  })

  test('refuses without a token (401), without the admin role (403) and for an unknown node (404), all in JSON', async () => {
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'op-ws-3', region: 'us-east-1' })
    try {
      const none = await act(mls.url, '/clients/op-ws-3/drain', 'POST', null)
      const monitor = await act(mls.url, '/clients/op-ws-3/drain', 'POST', MONITOR_ONLY)
      const forget = await act(mls.url, '/clients/op-ws-3', 'DELETE', MONITOR_ONLY)
      const unknown = await act(mls.url, '/clients/nobody-here/eject')
      expect([none.status, monitor.status, forget.status, unknown.status]).toEqual([401, 403, 403, 404])
      expect([none.body.code, monitor.body.code, forget.body.code, unknown.body.code]).toEqual(['unauthorized', 'forbidden', 'forbidden', 'unknown_node'])
      for (const { body } of [none, monitor, forget, unknown]) expect(errorBodySchema.safeParse(body).success).toBe(true)
      expect(mls.server.registry.get('op-ws-3')?.operatorDrained).toBe(false)
      // The detail needs only the monitor role.
      expect((await act(mls.url, '/clients/op-ws-3', 'GET', MONITOR_ONLY)).status).toBe(200)
    } finally {
      agent.close()
    }
  })

  test("a client's detail lists its recent tasks with every attempt, on it and on others", async () => {
    const bad = await startHttpAgent(mls.url, { nodeId: 'op-bad', region: 'asia-east-1', work: () => new Response('broken', { status: 500 }) })
    const good = await startHttpAgent(mls.url, { nodeId: 'op-good', region: 'asia-east-1' })
    try {
      for (let i = 0; i < 4; i++) await postTask(mls.url, { region: 'asia-east-1', payload: { i } })
      const detail = await act(mls.url, '/clients/op-good', 'GET')
      expect(detail.status).toBe(200)
      expect(clientDetailSchema.safeParse(detail.body).success).toBe(true)
      expect(detail.body.tasks.length).toBe(4)
      for (const task of detail.body.tasks) expect(task.tries.at(-1)).toMatchObject({ node_id: 'op-good', status: 200 })
      const retried = detail.body.tasks.find((task: any) => task.tries.length === 2)
      expect(retried.tries[0]).toMatchObject({ node_id: 'op-bad', kind: 'status', status: 500 })
      expect(typeof retried.tries[0].ms).toBe('number')
    } finally {
      bad.stop()
      good.stop()
    }
  })
})
