/**
 * Operator actions (drain, undrain, eject, forget) under concurrency and by the wrong people, against the
 * real server and real agents: tasks in flight and queued for the agent, re-registrations, reloads, a
 * thousand actions in a row, tokens without the admin role, and node ids a URL path cannot carry as they are.
 */
import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import {
  type HttpAgent,
  metricValue,
  openWs,
  postJson,
  postTask,
  SEED_CONFIG,
  startHttpAgent,
  startWsAgent,
  type TestServer,
  TOKEN,
  testScope,
  waitFor,
} from '../../support/helpers.ts'

const SUBMIT_ONLY = 'submit-only-token-0123456789'
const MONITOR_ONLY = 'monitor-only-token-0123456789'
const AGENT_ONLY = 'agent-only-token-0123456789'
const ACCESS = [
  { token: SUBMIT_ONLY, roles: ['submit'] },
  { token: MONITOR_ONLY, roles: ['monitor'] },
  { token: AGENT_ONLY, roles: ['agent'] },
]

const { defer, server } = testScope()

/** An operator action (or a GET) with `token`; the body, if any, as JSON. */
async function act(url: string, path: string, method = 'POST', token: string = TOKEN, body?: unknown) {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(`${url}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  return { status: response.status, body: (await response.json()) as any }
}

/** drain, undrain, eject or forget, as the routes spell them. */
function operate(url: string, nodeId: string, action: 'drain' | 'undrain' | 'eject' | 'forget', token = TOKEN, body?: unknown) {
  return action === 'forget' ? act(url, `/clients/${nodeId}`, 'DELETE', token) : act(url, `/clients/${nodeId}/${action}`, 'POST', token, body)
}

/** An HTTP agent whose every task waits until `open()`: tasks in flight on demand. */
async function gatedAgent(mls: TestServer, nodeId: string, region: string): Promise<HttpAgent & { open: () => void }> {
  const gate = Promise.withResolvers<void>()
  const agent = await startHttpAgent(mls.url, {
    nodeId,
    region,
    work: async (payload) => {
      await gate.promise
      return Response.json({ node: nodeId, echo: payload })
    },
  })
  defer(() => {
    gate.resolve()
    agent.stop()
  })
  return { ...agent, open: () => gate.resolve() }
}

/** What /status, /metrics and /clients say is in flight, queued and registered: all must agree. */
async function counters(mls: TestServer) {
  const status = (await (await fetch(`${mls.url}/status`)).json()) as any
  const metrics = await (await fetch(`${mls.url}/metrics`)).text()
  const clients = (await act(mls.url, '/clients', 'GET')).body.clients as Array<{ node_id: string; in_flight: number }>
  return {
    tasks: status.tasks,
    queued: status.queue.depth,
    clients: status.clients,
    metricsInFlight: metricValue(metrics, 'moonlight_tasks_in_flight'),
    metricsQueued: metricValue(metrics, 'moonlight_queue_depth'),
    listed: clients.length,
    inFlightOnClients: clients.reduce((sum, client) => sum + client.in_flight, 0),
  }
}

describe('operator actions, hostile', () => {
  test('node ids "." and ".." are refused at registration: no URL path can name them, so no operator could ever act on such an agent', async () => {
    const mls = server()
    // A dot segment is removed from any URL path before a route sees it, %2E%2E included.
    for (const path of ['/clients/..', '/clients/%2E%2E/drain', '/clients/./eject']) {
      const response = await fetch(`${mls.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })
      expect([path, response.status]).toEqual([path, 404])
    }
    for (const nodeId of ['.', '..']) {
      const heartbeat = await postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region: 'usa', port: 3000 })
      expect([nodeId, heartbeat.status, heartbeat.json().code]).toEqual([nodeId, 400, 'invalid_body'])
      const peer = await openWs(mls.wsUrl)
      defer(peer.close)
      peer.send({ type: 'register', payload: { ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region: 'usa', port: 3000 } })
      expect((await peer.next()).payload.code).toBe('invalid_message')
      expect(mls.server.registry.get(nodeId)).toBeUndefined()
      // A task naming one is refused like any other bad name.
      expect((await postTask(mls.url, { node_id: nodeId, payload: 1 })).status).toBe(400)
    }
    // Dots elsewhere in a name are fine, and reachable, percent-encoded or not.
    for (const nodeId of ['...', '.hidden', 'a..b']) {
      const agent = await startHttpAgent(mls.url, { nodeId, region: 'usa' })
      defer(agent.stop)
      const encoded = [...nodeId].map((char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`).join('')
      expect((await act(mls.url, `/clients/${encoded}/drain`)).body.client).toMatchObject({ node_id: nodeId, drained_by_operator: true })
      expect((await act(mls.url, `/clients/${nodeId}`, 'DELETE')).body).toEqual({ forgotten: nodeId })
    }
  })

  test('ids that differ only in case are two clients; a slash, an over-long id or an unnormalized Unicode twin names none', async () => {
    const mls = server()
    const upper = await startHttpAgent(mls.url, { nodeId: 'Case-Node', region: 'usa' })
    const lower = await startHttpAgent(mls.url, { nodeId: 'case-node', region: 'usa' })
    defer(upper.stop)
    defer(lower.stop)
    expect((await act(mls.url, '/clients/Case-Node/drain')).body.client.node_id).toBe('Case-Node')
    expect(mls.server.registry.get('case-node')?.operatorDrained).toBe(false)
    for (const path of ['/clients/case%2Fnode/drain', `/clients/${'x'.repeat(129)}/eject`, '/clients/case-nod%C3%A9/drain', '/clients/case-node%CC%81/drain']) {
      const refused = await act(mls.url, path)
      expect([path, refused.status, refused.body.code]).toEqual([path, 404, 'unknown_node'])
    }
    expect((await act(mls.url, '/clients/case-node', 'DELETE')).body).toEqual({ forgotten: 'case-node' })
    expect(mls.server.registry.get('Case-Node')?.operatorDrained).toBe(true)
  })

  test('no token without the admin role acts, on a real client or on none, and the refusal is the same either way', async () => {
    const mls = server({ access: ACCESS } as never)
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'guarded', region: 'usa' })
    defer(agent.close)
    for (const token of [SUBMIT_ONLY, MONITOR_ONLY, AGENT_ONLY]) {
      for (const action of ['drain', 'undrain', 'eject', 'forget'] as const) {
        for (const nodeId of ['guarded', 'nobody-at-all']) {
          const refused = await operate(mls.url, nodeId, action, token, action === 'eject' ? { seconds: 60 } : undefined)
          expect([action, nodeId, refused.status, refused.body.code, refused.body.role]).toEqual([action, nodeId, 403, 'forbidden', 'admin'])
        }
      }
    }
    const client = mls.server.registry.get('guarded')
    expect([client?.state, client?.operatorDrained]).toEqual(['healthy', false])
    expect((await postTask(mls.url, { node_id: 'guarded', payload: 'still mine' })).status).toBe(200)
  })

  test('tasks waiting for a full agent by its node id are answered at once when an operator drains, ejects or forgets it', async () => {
    const mls = server({ queue: { timeout: 20 } } as never)
    for (const [action, code] of [
      ['drain', 'node_unavailable'],
      ['eject', 'node_unavailable'],
      ['forget', 'unknown_node'],
    ] as const) {
      const nodeId = `full-${action}`
      const agent = await gatedAgent(mls, nodeId, 'usa')
      expect((await agent.heartbeat({ max_in_flight: 1 })).status).toBe(200)
      const running = postTask(mls.url, { node_id: nodeId, payload: 'running' })
      await waitFor(() => agent.received.length === 1, 'the first task on the agent')
      const waiting = [postTask(mls.url, { node_id: nodeId, payload: 'w1' }), postTask(mls.url, { node_id: nodeId, payload: 'w2', priority: 'high' })]
      await waitFor(async () => (await counters(mls)).queued === 2, 'two tasks queued for the agent')
      expect((await operate(mls.url, nodeId, action, TOKEN, action === 'eject' ? { seconds: 60 } : undefined)).status).toBe(200)
      const answered = await Promise.all(waiting)
      expect(answered.map((result) => [result.status, result.json().code])).toEqual([
        [action === 'forget' ? 404 : 503, code],
        [action === 'forget' ? 404 : 503, code],
      ])
      agent.open()
      expect((await running).status).toBe(200)
      // The queued tasks never reached it.
      expect(agent.received).toEqual(['running'])
    }
    expect(await counters(mls)).toMatchObject({ tasks: 0, queued: 0, metricsInFlight: 0, metricsQueued: 0, inFlightOnClients: 0 })
  })

  test('tasks waiting for a full WebSocket agent by its node id are answered at once when it disconnects, not at their queue_timeout', async () => {
    const mls = server({ queue: { timeout: 20 } } as never)
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'ws-full', region: 'usa', register: { max_in_flight: 1 }, answer: () => null })
    const running = postTask(mls.url, { node_id: 'ws-full', payload: 'running', retry_on: ['unreachable'] })
    await waitFor(() => agent.received.length === 1, 'the first task on the agent')
    const waiting = postTask(mls.url, { node_id: 'ws-full', payload: 'waiting' })
    await waitFor(async () => (await counters(mls)).queued === 1, 'a task queued for the agent')
    agent.close()
    const [first, second] = await Promise.all([running, waiting])
    // The running one was sent and lost: not sent again under retry_on ["unreachable"].
    expect([first.status, first.json().code, second.status, second.json().code]).toEqual([502, 'all_attempts_failed', 404, 'unknown_node'])
    expect(agent.received).toEqual(['running'])
    expect(await counters(mls)).toMatchObject({ tasks: 0, queued: 0, clients: 0, metricsInFlight: 0 })
  })

  test('a task waiting for a slot in the pool is not lost when its full agent is drained: another agent joining serves it', async () => {
    const mls = server({ queue: { timeout: 20 } } as never)
    const full = await gatedAgent(mls, 'pool-full', 'us-east-1')
    expect((await full.heartbeat({ max_in_flight: 1 })).status).toBe(200)
    const running = postTask(mls.url, { region: 'us-east-1', payload: 'running', fallback: 'none' })
    await waitFor(() => full.received.length === 1, 'the first task on the agent')
    const waiting = postTask(mls.url, { region: 'us-east-1', payload: 'waiting', fallback: 'none' })
    await waitFor(async () => (await counters(mls)).queued === 1, 'a task queued in the pool')
    expect((await operate(mls.url, 'pool-full', 'drain')).status).toBe(200)
    const other = await startHttpAgent(mls.url, { nodeId: 'pool-other', region: 'us-east-1' })
    defer(other.stop)
    const served = await waiting
    expect([served.status, served.headers.get('x-moonlight-node')]).toEqual([200, 'pool-other'])
    full.open()
    expect((await running).status).toBe(200)
    expect(full.received).toEqual(['running'])
    expect(await counters(mls)).toMatchObject({ tasks: 0, queued: 0, metricsInFlight: 0, inFlightOnClients: 0 })
  })

  test('an agent on probation after an ejection stays on probation when it reconnects or re-registers from a new address, and its ejections still count', async () => {
    const mls = server({ client_ttl: 1.5, health: { ejection_time: 30, max_ejection_time: 300 } } as never)
    // WebSocket: a new connection after the old one is gone.
    const first = await startWsAgent(mls.wsUrl, { nodeId: 'trial-ws', region: 'usa' })
    expect((await act(mls.url, '/clients/trial-ws/eject', 'POST', TOKEN, { seconds: 0.2 })).status).toBe(200)
    await waitFor(async () => (await act(mls.url, '/clients/trial-ws', 'GET')).body.client.state === 'probation', 'the back-off to end')
    first.close()
    await waitFor(() => mls.server.registry.get('trial-ws') === undefined, 'the old connection gone')
    const second = await startWsAgent(mls.wsUrl, { nodeId: 'trial-ws', region: 'usa', answer: () => ({ response: 'bad', status: 500 }) })
    defer(second.close)
    expect((await act(mls.url, '/clients/trial-ws', 'GET')).body.client.state).toBe('probation')
    // Its trial fails: ejected again, for twice health.ejection_time, as the second ejection in a row.
    await postTask(mls.url, { node_id: 'trial-ws', payload: 'trial', retry: false })
    const again = (await act(mls.url, '/clients/trial-ws', 'GET')).body.client
    expect(again.state).toBe('ejected')
    expect(Date.parse(again.ejected_until) - Date.now()).toBeGreaterThan(30_000)

    // HTTP: the same node heartbeating from another port is a new record.
    const old = await startHttpAgent(mls.url, { nodeId: 'trial-http', region: 'usa' })
    defer(old.stop)
    expect((await act(mls.url, '/clients/trial-http/eject', 'POST', TOKEN, { seconds: 0.2 })).status).toBe(200)
    await waitFor(async () => (await act(mls.url, '/clients/trial-http', 'GET')).body.client.state === 'probation', 'the back-off to end')
    // A node moves to a new address once its old one has missed two heartbeats (two thirds of client_ttl).
    old.stop()
    let moved: HttpAgent | undefined
    await waitFor(
      async () => {
        moved = await startHttpAgent(mls.url, { nodeId: 'trial-http', region: 'usa' }).catch(() => undefined)
        return moved !== undefined
      },
      'the node to move to its new address',
      10_000,
    )
    defer(() => moved?.stop())
    expect(mls.server.registry.get('trial-http')?.port).toBe(moved?.port)
    expect(mls.server.registry.get('trial-http')).toMatchObject({ state: 'probation', ejections: 1 })
  })

  test('a thousand actions interleaved with tasks, re-registrations and reloads leave every count at zero and the registry true', async () => {
    const mls = server({ queue: { timeout: 2 } } as never)
    const http = await startHttpAgent(mls.url, { nodeId: 'loop-http', region: 'eu-west-1' })
    const slotted = await startHttpAgent(mls.url, {
      nodeId: 'loop-slots',
      region: 'eu-west-1',
      work: async (payload) => {
        await Bun.sleep(1)
        return Response.json({ payload })
      },
    })
    defer(http.stop)
    defer(slotted.stop)
    expect((await slotted.heartbeat({ max_in_flight: 2 })).status).toBe(200)
    const sockets = [await startWsAgent(mls.wsUrl, { nodeId: 'loop-ws', region: 'eu-west-1', register: { max_in_flight: 2 } })]
    defer(() => {
      for (const socket of sockets) socket.close()
    })
    const actions = ['drain', 'eject', 'undrain', 'forget', 'undrain'] as const
    const nodes = ['loop-http', 'loop-slots', 'loop-ws'] as const
    const tasks: Array<Promise<{ status: number; code?: string }>> = []
    for (let i = 0; i < 1000; i++) {
      const nodeId = nodes[i % 3]!
      const action = actions[i % 5]!
      const body = i % 4 === 0 ? { node_id: nodeId, payload: i, queue_timeout: 1 } : { region: 'eu-west-1', payload: i, fallback: 'none', queue_timeout: 1 }
      tasks.push(postTask(mls.url, body).then((result) => ({ status: result.status, code: result.status === 200 ? undefined : result.json().code })))
      const done = await operate(mls.url, nodeId, action, TOKEN, action === 'eject' ? { seconds: 0.05 } : undefined)
      // Forgotten earlier and not yet back: 404, nothing else.
      expect([200, 404]).toContain(done.status)
      if (action === 'forget' && nodeId === 'loop-ws') {
        await sockets.at(-1)!.closed
        sockets.push(await startWsAgent(mls.wsUrl, { nodeId: 'loop-ws', region: 'eu-west-1', register: { max_in_flight: 2 } }))
      }
      if (i % 6 === 0) {
        expect((await http.heartbeat()).status).toBe(200)
        expect((await slotted.heartbeat({ max_in_flight: 2 })).status).toBe(200)
      }
      if (i % 100 === 0) mls.server.reload(parseConfig({ ...SEED_CONFIG, queue: { timeout: 2 }, health: { failures_to_eject: 1 + (i % 3) } }, 'reload'))
    }
    const results = await Promise.all(tasks)
    // Every task was answered, with a success or a refusal that says why nobody took it.
    for (const result of results)
      expect(['200', '503 no_client', '503 node_unavailable', '404 unknown_node']).toContain(`${result.status}${result.code ? ` ${result.code}` : ''}`)
    expect(results.filter((result) => result.status === 200).length).toBeGreaterThan(0)
    // Back to a known state: every node undrained and present.
    expect((await http.heartbeat()).status).toBe(200)
    expect((await slotted.heartbeat({ max_in_flight: 2 })).status).toBe(200)
    for (const nodeId of nodes) expect((await operate(mls.url, nodeId, 'undrain')).status).toBe(200)
    const listed = (await act(mls.url, '/clients', 'GET')).body.clients.map((client: { node_id: string }) => client.node_id).sort()
    expect(listed).toEqual([...nodes].sort())
    expect(await counters(mls)).toMatchObject({ tasks: 0, queued: 0, clients: 3, metricsInFlight: 0, metricsQueued: 0, listed: 3, inFlightOnClients: 0 })
  }, 50_000)
})
