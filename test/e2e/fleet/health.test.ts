import { describe, expect, test } from 'bun:test'
import { connect, type Socket } from 'node:net'
import { postTask, startHttpAgent, startWsAgent, type TestServer, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()

/** A masked client text frame, written by hand: this peer must be able to go silent, which WebSocket clients never do. */
function textFrame(text: string): Buffer {
  const payload = Buffer.from(text)
  const mask = Buffer.from([1, 2, 3, 4])
  const length = payload.length
  const header = length < 126 ? Buffer.from([0x81, 0x80 | length]) : Buffer.from([0x81, 0x80 | 126, length >> 8, length & 0xff])
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!))
  return Buffer.concat([header, mask, masked])
}

/** A raw TCP WebSocket peer that registers and then neither reads nor answers pings. */
async function silentPeer(mls: TestServer, nodeId: string, weight = 1): Promise<Socket> {
  const url = new URL(mls.wsUrl)
  const socket = connect(Number(url.port), url.hostname)
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  socket.write(
    `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  )
  await new Promise<void>((resolve) => socket.once('data', () => resolve()))
  socket.write(textFrame(JSON.stringify({ type: 'register', payload: { node_id: nodeId, token: TOKEN, region: 'usa', port: 1, weight } })))
  await waitFor(() => mls.server.registry.get(nodeId) !== undefined, `${nodeId} to register`)
  // From here on it reads nothing: the kernel buffers fill and pings go unanswered.
  socket.pause()
  defer(() => socket.destroy())
  return socket
}

describe('health checks', () => {
  test('an HTTP client with no heartbeat for client_ttl is removed', async () => {
    const mls = server({ client_ttl: 0.5 })
    const agent = await startHttpAgent(mls.url, { nodeId: 'quiet', region: 'usa' })
    defer(agent.stop)
    expect(mls.server.registry.get('quiet')).toBeDefined()
    await waitFor(() => mls.server.registry.get('quiet') === undefined, 'the TTL to expire', 5000)
    expect((await postTask(mls.url, { region: 'usa', payload: 1 })).status).toBe(503)
    // Heartbeating again brings it back.
    expect((await agent.heartbeat()).status).toBe(200)
    expect((await postTask(mls.url, { region: 'usa', payload: 1 })).status).toBe(200)
  })

  test('a WebSocket client silent past read_timeout is dropped; one that answers pings stays', async () => {
    const mls = server({ ws: { heartbeat_interval: 0.1, read_timeout: 0.5, connection_check_interval: 0.1 } })
    const lively = await startWsAgent(mls.wsUrl, { nodeId: 'lively', region: 'usa' })
    defer(lively.close)
    await silentPeer(mls, 'mute')
    await waitFor(() => mls.server.registry.get('mute') === undefined, 'the silent peer to be dropped', 5000)
    // The live one answered every ping in the meantime, so it is still there and serving.
    expect(mls.server.registry.get('lively')).toBeDefined()
    expect((await postTask(mls.url, { region: 'usa', payload: 'still here' })).headers.get('x-moonlight-node')).toBe('lively')
  })

  test('a WebSocket client that stops reading is cut after write_timeout and its tasks fail over', async () => {
    const mls = server({ max_body_bytes: 8 * 1024 * 1024, task_timeout: 30, retry_count: 3, ws: { write_timeout: 0.5, read_timeout: 300 } })
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'usa', weight: 1, work: () => Response.json({ by: 'good' }) })
    defer(good.stop)
    await silentPeer(mls, 'stalled', 1000)
    const big = 'z'.repeat(2 * 1024 * 1024)
    // Enough data to fill the socket buffers: the sends queue up and the write timer starts.
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => postTask(mls.url, { region: 'usa', payload: { i, big } })))
    for (const result of results) {
      expect(result.status).toBe(200)
      expect(result.json()).toEqual({ by: 'good' })
    }
    expect(results.some((result) => result.headers.get('x-moonlight-attempts') === '2')).toBe(true)
    expect(mls.server.registry.get('stalled')).toBeUndefined()
  })

  test('a trial task whose answer is too large ends the trial: the client is tried again, not stuck on probation', async () => {
    const mls = server({ max_answer_bytes: 1024, health: { failures_to_eject: 3, ejection_time: 0.2, max_ejection_time: 1 } })
    let mode: 'fail' | 'huge' | 'ok' = 'fail'
    const flaky = await startHttpAgent(mls.url, {
      nodeId: 'flaky',
      region: 'usa',
      weight: 1000,
      work: () => (mode === 'fail' ? new Response('down', { status: 500 }) : mode === 'huge' ? new Response('x'.repeat(4096)) : Response.json({ by: 'flaky' })),
    })
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'usa', work: () => Response.json({ by: 'good' }) })
    defer(flaky.stop)
    defer(good.stop)
    for (let i = 0; i < 3; i++) expect((await postTask(mls.url, { region: 'usa', payload: i })).json()).toEqual({ by: 'good' })
    expect(mls.server.registry.get('flaky')!.state).toBe('ejected')
    await waitFor(() => mls.server.registry.get('flaky')!.state === 'probation', 'the back-off to end')
    mode = 'huge'
    const trial = await postTask(mls.url, { region: 'usa', payload: 'trial' })
    expect(trial.status).toBe(502)
    expect(trial.json().code).toBe('answer_too_large')
    // No verdict: still on probation, and the next task is its next trial.
    expect(mls.server.registry.get('flaky')).toMatchObject({ state: 'probation', trialInFlight: false })
    mode = 'ok'
    const next = await postTask(mls.url, { region: 'usa', payload: 'next' })
    expect(next.headers.get('x-moonlight-node')).toBe('flaky')
    expect(mls.server.registry.get('flaky')!.state).toBe('healthy')
  })

  test("a black hole alone in its leaf region is ejected when the task's region has other clients", async () => {
    const mls = server({ task_timeout: 0.3 })
    // Registers, then never answers a task.
    const hole = await startWsAgent(mls.wsUrl, { nodeId: 'hole', region: 'us-east-1', answer: () => null })
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'us-west-1' })
    defer(hole.close)
    defer(good.stop)
    const statuses: number[] = []
    for (let i = 0; i < 30; i++) statuses.push((await postTask(mls.url, { region: 'usa', payload: i })).status)
    // failures_to_eject (3) timeouts, then only the good agent: usa's pool has two clients, so one may be ejected.
    expect(statuses.filter((status) => status === 504)).toHaveLength(3)
    expect(statuses.filter((status) => status === 200)).toHaveLength(27)
    expect(mls.server.registry.get('hole')!.state).toBe('ejected')
  })

  test('a lone client is still kept when it is the last one its tasks can reach', async () => {
    const mls = server({ task_timeout: 0.2 })
    const hole = await startWsAgent(mls.wsUrl, { nodeId: 'hole', region: 'eu-west-1', answer: () => null })
    defer(hole.close)
    for (let i = 0; i < 5; i++) expect((await postTask(mls.url, { region: 'eu-west-1', payload: i })).status).toBe(504)
    // Kept in service, but not called healthy: failing, kept because ejecting it would leave its pool empty.
    expect(mls.server.registry.get('hole')!.state).toBe('failing')
  })

  test('a lone client failing every task is shown failing in /clients, /status and /metrics; one answer makes it healthy again', async () => {
    const mls = server({ retry_count: 0 })
    let broken = true
    const agent = await startHttpAgent(mls.url, {
      nodeId: 'lone',
      region: 'eu-west-1',
      work: () => (broken ? Response.json({ error: 'broken' }, { status: 500 }) : Response.json({ ok: true })),
    })
    defer(agent.stop)
    const view = async () => {
      const response = await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
      const { clients } = (await response.json()) as { clients: Array<{ node_id: string; state: string }> }
      return clients.find((client) => client.node_id === 'lone')?.state
    }
    const status = async () => ((await (await fetch(`${mls.url}/status`)).json()) as { regions: Record<string, unknown> }).regions['eu-west-1']
    const metrics = async () => (await (await fetch(`${mls.url}/metrics`)).text()).split('\n').filter((line) => line.startsWith('moonlight_clients{'))
    // Below failures_to_eject (3) it is healthy, as any client with a bad moment.
    for (let i = 0; i < 2; i++) expect((await postTask(mls.url, { region: 'eu-west-1', payload: i })).status).toBe(502)
    expect(await view()).toBe('healthy')
    expect((await postTask(mls.url, { region: 'eu-west-1', payload: 2 })).status).toBe(502)
    expect(await view()).toBe('failing')
    expect(await status()).toEqual({ clients: 1, active: 1, failing: 1 })
    expect(await metrics()).toEqual(['moonlight_clients{region="eu-west-1",protocol="http",state="failing"} 1'])
    // Still in service: the next task goes to it, and an answer ends it.
    broken = false
    expect((await postTask(mls.url, { region: 'eu-west-1', payload: 3 })).status).toBe(200)
    expect(await view()).toBe('healthy')
    expect(await status()).toEqual({ clients: 1, active: 1, failing: 0 })
    expect(await metrics()).toEqual(['moonlight_clients{region="eu-west-1",protocol="http",state="healthy"} 1'])
  })

  test('a failing client is ejected by its next failure once its pool has another client', async () => {
    const mls = server({ retry_count: 0 })
    const failing = await startHttpAgent(mls.url, { nodeId: 'failing', region: 'eu-west-1', work: () => Response.json({ error: 'broken' }, { status: 500 }) })
    defer(failing.stop)
    for (let i = 0; i < 3; i++) await postTask(mls.url, { region: 'eu-west-1', payload: i })
    expect(mls.server.registry.get('failing')!.state).toBe('failing')
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'eu-west-1' })
    defer(good.stop)
    await waitFor(async () => {
      await postTask(mls.url, { region: 'eu-west-1', payload: 'next' })
      return mls.server.registry.get('failing')!.state === 'ejected'
    }, 'the failing client to be ejected')
  })
})
