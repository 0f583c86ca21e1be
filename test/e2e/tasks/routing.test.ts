import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import {
  type HttpAgent,
  postTask,
  startHttpAgent,
  startTestServer,
  startWsAgent,
  type TestServer,
  TOKEN,
  testScope,
  type WsAgent,
} from '../../support/helpers.ts'

const { defer, server } = testScope()

describe('routing with the seed config, an HTTP agent and a WebSocket agent', () => {
  let mls: TestServer
  let east: HttpAgent
  let west: WsAgent

  beforeAll(async () => {
    mls = startTestServer()
    east = await startHttpAgent(mls.url, {
      nodeId: 'node-001',
      region: 'us-east-1',
      work: (payload, request) =>
        new Response(JSON.stringify({ status: 'completed', result: payload, task: request.headers.get('x-task-id') }), {
          status: 201,
          headers: { 'content-type': 'application/vnd.moonlight+json' },
        }),
    })
    // The seed's own WebSocket client registers in "us-west", a region its hierarchy does not name.
    west = await startWsAgent(mls.wsUrl, {
      nodeId: 'node-002',
      region: 'us-west',
      answer: (payload) => ({ response: { status: 'completed', result: payload }, status: 202, headers: { 'X-Custom': 'yes' } }),
    })
  })
  afterAll(async () => {
    west.close()
    east.stop()
    await mls.stop()
  })

  test('the seed curl request reaches a client and its answer comes back as-is', async () => {
    const result = await postTask(mls.url, { region: 'us-east-1', payload: { action: 'process_data', data: { message: 'Hello' } } })
    expect(result.status).toBe(201)
    expect(result.headers.get('content-type')).toBe('application/vnd.moonlight+json')
    const taskId = result.headers.get('x-task-id')
    expect(taskId).toBeTruthy()
    expect(result.headers.get('x-moonlight-node')).toBe('node-001')
    // Only the payload is forwarded, with the task id in X-Task-ID.
    expect(result.json()).toEqual({ status: 'completed', result: { action: 'process_data', data: { message: 'Hello' } }, task: taskId })
    expect(east.received.at(-1)).toEqual({ action: 'process_data', data: { message: 'Hello' } })
  })

  test("a WebSocket client's task_response becomes the HTTP answer: status, headers, body", async () => {
    const result = await postTask(mls.url, { region: 'us-west', payload: [1, 'two', null] })
    expect(result.status).toBe(202)
    expect(result.headers.get('x-moonlight-node')).toBe('node-002')
    expect(result.headers.get('x-custom')).toBe('yes')
    expect(result.headers.get('content-type')).toBe('application/json')
    expect(result.json()).toEqual({ status: 'completed', result: [1, 'two', null] })
    expect(west.received.at(-1)).toEqual([1, 'two', null])
  })

  test('any JSON value is a payload: strings, numbers, false, null', async () => {
    for (const payload of ['text', 42, false, null]) {
      const result = await postTask(mls.url, { region: 'us-west', payload })
      expect(result.status).toBe(202)
      expect(result.json().result).toEqual(payload)
    }
  })

  test('a region with no client climbs the hierarchy', async () => {
    // us-west-1 -> usa has node-001 (us-east-1).
    const result = await postTask(mls.url, { region: 'us-west-1', payload: { n: 1 } })
    expect(result.headers.get('x-moonlight-node')).toBe('node-001')
    // eu-west-1 -> europe -> emea -> global: either client.
    const far = await postTask(mls.url, { region: 'eu-west-1', payload: { n: 2 } })
    expect(['node-001', 'node-002']).toContain(far.headers.get('x-moonlight-node')!)
  })

  test('empty, "global" and "default" regions, or none, reach both protocols in one pool', async () => {
    const nodes = new Set<string>()
    for (const region of ['', 'global', 'default', undefined]) {
      for (let i = 0; i < 2; i++) {
        const result = await postTask(mls.url, region === undefined ? { payload: i } : { region, payload: i })
        expect(result.status).toBeLessThan(300)
        nodes.add(result.headers.get('x-moonlight-node')!)
      }
    }
    expect(nodes).toEqual(new Set(['node-001', 'node-002']))
  })

  test('weights split the traffic across HTTP and WebSocket clients', async () => {
    const heavy = await startWsAgent(mls.wsUrl, { nodeId: 'heavy', region: 'asia', weight: 3 })
    const light = await startHttpAgent(mls.url, { nodeId: 'light', region: 'asia', weight: 1 })
    try {
      const counts = new Map<string, number>()
      for (let i = 0; i < 40; i++) {
        const node = (await postTask(mls.url, { region: 'asia', payload: i })).headers.get('x-moonlight-node')!
        counts.set(node, (counts.get(node) ?? 0) + 1)
      }
      expect(Object.fromEntries(counts)).toEqual({ heavy: 30, light: 10 })
    } finally {
      heavy.close()
      light.stop()
    }
  })

  test('/status has the seed shape plus totals, and shows no client IPs', async () => {
    const response = await fetch(`${mls.url}/status`)
    expect(response.status).toBe(200)
    const status = await response.json()
    expect(status).toMatchObject({
      server: 'Online',
      websocket: 'Connected',
      clients: expect.any(Number),
      tasks: 0,
      regions: { 'us-east-1': { clients: 1, active: 1, failing: 0 }, 'us-west': { clients: 1, active: 1, failing: 0 } },
      version: expect.any(String),
      uptime_s: expect.any(Number),
      tasks_total: expect.any(Number),
    })
    expect(JSON.stringify(status)).not.toContain('127.0.0.1')
  })

  test('/clients needs the token and lists every client with its health and counters', async () => {
    expect((await fetch(`${mls.url}/clients`)).status).toBe(401)
    const response = await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
    const { clients } = await response.json()
    const http = clients.find((client: { node_id: string }) => client.node_id === 'node-001')
    expect(http).toMatchObject({ region: 'us-east-1', protocol: 'http', ip: '127.0.0.1', port: east.port, weight: 1, state: 'healthy', in_flight: 0 })
    expect(http.successes).toBeGreaterThan(0)
    expect(http.latency_ms).toBeGreaterThan(0)
    expect(Date.parse(http.last_seen)).not.toBeNaN()
    expect(clients.find((client: { node_id: string }) => client.node_id === 'node-002')).toMatchObject({ protocol: 'ws', region: 'us-west' })
  })

  test('/regions is the hierarchy as a tree with client counts; /healthz answers', async () => {
    const tree = await (await fetch(`${mls.url}/regions`)).json()
    expect(tree.region).toBe('global')
    const names = tree.children.map((child: { region: string }) => child.region)
    expect(names).toEqual(['asia', 'emea', 'northamerica', 'us-west'])
    const usa = tree.children[2].children[0]
    expect(usa).toMatchObject({ region: 'usa', total: 1 })
    expect(await (await fetch(`${mls.url}/healthz`)).json()).toEqual({ ok: true })
  })

  test('a heartbeat without ip uses the source address; weight 0 drains the client', async () => {
    const agent = await startHttpAgent(mls.url, { nodeId: 'drainer', region: 'ap-southeast-1' })
    try {
      const noIp = await fetch(`${mls.url}/client/heartbeat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ node_id: 'drainer', token: TOKEN, region: 'ap-southeast-1', port: agent.port }),
      })
      expect(noIp.status).toBe(200)
      expect(await noIp.json()).toMatchObject({ status: 'ok', server_time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) })
      expect((await postTask(mls.url, { region: 'ap-southeast-1', payload: 1 })).headers.get('x-moonlight-node')).toBe('drainer')
      expect((await agent.heartbeat({ weight: 0 })).status).toBe(200)
      // Drained: the region falls back up the tree to global.
      const after = await postTask(mls.url, { region: 'ap-southeast-1', payload: 2 })
      expect(after.headers.get('x-moonlight-node')).not.toBe('drainer')
      expect(agent.received).toHaveLength(1)
    } finally {
      agent.stop()
    }
  })
})

describe('open task endpoint', () => {
  test('require_task_token false lets callers in without a token', async () => {
    const mls = startTestServer({ require_task_token: false })
    const agent = await startHttpAgent(mls.url, { nodeId: 'open', region: 'usa' })
    try {
      const result = await postTask(mls.url, { payload: 'hi' }, null)
      expect(result.status).toBe(200)
      expect(result.json()).toEqual({ node: 'open', echo: 'hi' })
    } finally {
      agent.stop()
      await mls.stop()
    }
  })
})

describe('WebSocket disabled', () => {
  test('ws.enabled false: no WebSocket path, and /status says Disabled', async () => {
    const mls = startTestServer({ ws: { enabled: false } })
    try {
      const status = await (await fetch(`${mls.url}/status`)).json()
      expect(status.websocket).toBe('Disabled')
      const response = await fetch(`${mls.url}/ws`, {
        headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' },
      })
      expect(response.status).toBe(404)
      expect(await response.json()).toMatchObject({ code: 'not_found' })
    } finally {
      await mls.stop()
    }
  })

  test('ws.path moves the endpoint', async () => {
    const mls = startTestServer({ ws: { path: '/agents' } })
    try {
      expect(mls.wsUrl).toEndWith('/agents')
      const agent = await startWsAgent(mls.wsUrl, { nodeId: 'moved', region: 'usa' })
      expect((await postTask(mls.url, { payload: 1 })).headers.get('x-moonlight-node')).toBe('moved')
      agent.close()
      expect((await fetch(`${mls.url}/ws`)).status).toBe(404)
    } finally {
      await mls.stop()
    }
  })
})

describe('metrics', () => {
  test('/metrics speaks the Prometheus text format with clients and task outcomes', async () => {
    const mls = server()
    const agent = await startHttpAgent(mls.url, { nodeId: 'm1', region: 'usa' })
    defer(agent.stop)
    await postTask(mls.url, { region: 'usa', payload: 1 })
    await postTask(mls.url, { region: 'emea', mode: 'broadcast', payload: 1 })
    const response = await fetch(`${mls.url}/metrics`)
    expect(response.headers.get('content-type')).toContain('text/plain')
    const text = await response.text()
    expect(text).toContain('# TYPE moonlight_clients gauge')
    expect(text).toContain('moonlight_clients{region="usa",protocol="http",state="healthy"} 1')
    expect(text).toContain('moonlight_tasks_total{outcome="ok"} 1')
    expect(text).toContain('moonlight_tasks_total{outcome="no_client"} 1')
    expect(text).toContain('moonlight_tasks_in_flight 0')
    expect(text).not.toContain('127.0.0.1')
  })
})

describe('task requests off the beaten path', () => {
  test('a charset in the content type, a chunked body and a lower-case bearer all run the task', async () => {
    const mls = server()
    const agent = await startHttpAgent(mls.url, { nodeId: 'path', region: 'usa' })
    defer(agent.stop)
    const withCharset = await fetch(`${mls.url}/task/request`, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8', authorization: `bearer ${TOKEN}` },
      body: JSON.stringify({ payload: 'charset' }),
    })
    expect(withCharset.status).toBe(200)
    const body = new TextEncoder().encode(JSON.stringify({ payload: 'chunked' }))
    const chunked = await fetch(`${mls.url}/task/request`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      body: new ReadableStream({
        start: (controller) => {
          controller.enqueue(body)
          controller.close()
        },
      }),
    })
    expect(chunked.status).toBe(200)
    expect(agent.received).toEqual(['charset', 'chunked'])
  })
})
