import { describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { parseConfig } from '../../../src/config/config.ts'
import { deadPort, postJson, postTask, SEED_CONFIG, startHttpAgent, startTestServer, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

async function registerDead(url: string, nodeId: string, region: string): Promise<void> {
  const result = await postJson(`${url}/client/heartbeat`, { ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region, port: deadPort() })
  expect(result.status).toBe(200)
}

const { defer, server } = testScope()

describe('failover', () => {
  test('a dead client (connection refused) is retried on a different client', async () => {
    const mls = server()
    await registerDead(mls.url, 'dead', 'usa')
    const alive = await startHttpAgent(mls.url, { nodeId: 'alive', region: 'usa' })
    defer(alive.stop)
    for (let i = 0; i < 4; i++) {
      const result = await postTask(mls.url, { region: 'usa', payload: i })
      expect(result.status).toBe(200)
      expect(result.headers.get('x-moonlight-node')).toBe('alive')
    }
    expect(alive.received).toEqual([0, 1, 2, 3])
  })

  test('a 500-ing client is retried elsewhere, and after repeated failures ejected', async () => {
    const mls = server()
    const broken = await startHttpAgent(mls.url, { nodeId: 'broken', region: 'europe', work: () => Response.json({ oops: true }, { status: 500 }) })
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'europe' })
    const good2 = await startHttpAgent(mls.url, { nodeId: 'good2', region: 'europe' })
    defer(broken.stop)
    defer(good.stop)
    defer(good2.stop)
    for (let i = 0; i < 9; i++) {
      const result = await postTask(mls.url, { region: 'europe', payload: i })
      expect(result.status).toBe(200)
      expect(result.headers.get('x-moonlight-node')).not.toBe('broken')
    }
    // failures_to_eject is 3: after three 500s it is ejected and gets nothing more.
    expect(broken.received).toHaveLength(3)
    const clients = (await (await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()).clients
    expect(clients.find((client: { node_id: string }) => client.node_id === 'broken')).toMatchObject({ state: 'ejected', failures: 3 })
    expect((await (await fetch(`${mls.url}/status`)).json()).regions.europe).toEqual({ clients: 3, active: 2, failing: 0 })
  })

  test("a client's 4xx is its answer: returned as-is, not retried, not counted against it", async () => {
    const mls = server()
    const picky = await startHttpAgent(mls.url, { nodeId: 'picky', region: 'asia', work: () => Response.json({ error: 'bad payload' }, { status: 422 }) })
    const other = await startHttpAgent(mls.url, { nodeId: 'other', region: 'asia' })
    defer(picky.stop)
    defer(other.stop)
    const result = await postTask(mls.url, { region: 'asia', payload: 'x' })
    expect(result.status).toBe(422)
    expect(result.json()).toEqual({ error: 'bad payload' })
    expect(other.received).toHaveLength(0)
    expect(mls.server.registry.get('picky')).toMatchObject({ state: 'healthy', failures: 0, successes: 1 })
  })

  test('every attempt failing gives 502 listing each attempt; retry_count bounds the attempts', async () => {
    const mls = server({ retry_count: 2 })
    const agents = []
    for (const nodeId of ['f1', 'f2', 'f3', 'f4']) {
      const agent = await startHttpAgent(mls.url, { nodeId, region: 'emea', work: () => new Response('down', { status: 503 }) })
      defer(agent.stop)
      agents.push(agent)
    }
    const result = await postTask(mls.url, { region: 'emea', payload: 1 })
    expect(result.status).toBe(502)
    const body = result.json()
    expect(body.code).toBe('all_attempts_failed')
    expect(body.attempts).toHaveLength(3)
    // Three different clients, each named with its reason.
    expect(new Set(body.attempts.map((attempt: { node_id: string }) => attempt.node_id)).size).toBe(3)
    expect(body.attempts[0]).toMatchObject({ reason: 'answered 503', status: 503, body: 'down' })
    expect(agents.reduce((sum, agent) => sum + agent.received.length, 0)).toBe(3)
  })

  test('the same client is tried again only when it is the only one', async () => {
    const mls = server({ retry_count: 2 })
    const solo = await startHttpAgent(mls.url, { nodeId: 'solo', region: 'asia', work: () => new Response('no', { status: 500 }) })
    defer(solo.stop)
    const result = await postTask(mls.url, { region: 'asia', payload: 1 })
    expect(result.status).toBe(502)
    expect(result.json().attempts.map((attempt: { node_id: string }) => attempt.node_id)).toEqual(['solo', 'solo', 'solo'])
  })

  test('no client anywhere gives 503 naming the region', async () => {
    const mls = server()
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: 1 })
    expect(result.status).toBe(503)
    expect(result.json()).toMatchObject({ code: 'no_client', region: 'eu-west-1' })
    expect(result.json().error).toContain('eu-west-1')
  })

  test('a timeout answers 504 and is not retried (the task may still be running)', async () => {
    const mls = server({ task_timeout: 0.3 })
    const slow = await startHttpAgent(mls.url, { nodeId: 'slow', region: 'usa', work: () => Bun.sleep(2000).then(() => Response.json({ late: true })) })
    const fast = await startHttpAgent(mls.url, { nodeId: 'fast', region: 'usa', weight: 0 })
    defer(slow.stop)
    defer(fast.stop)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(504)
    expect(result.json()).toMatchObject({ code: 'timeout', attempts: [{ node_id: 'slow' }] })
    expect(fast.received).toHaveLength(0)
  })

  test('a silent WebSocket client times out with 504; a reload to a shorter task_timeout applies to the next task', async () => {
    const mls = server({ task_timeout: 2 })
    const silent = await startWsAgent(mls.wsUrl, { nodeId: 'silent', region: 'usa', answer: () => null })
    defer(silent.close)
    const startedLong = performance.now()
    const long = postTask(mls.url, { region: 'usa', payload: 'long' })
    await waitFor(() => silent.received.length === 1, 'the first task to reach the agent')
    mls.server.reload(parseConfig({ ...SEED_CONFIG, task_timeout: 0.2 }, 'test'))
    const short = postTask(mls.url, { region: 'usa', payload: 'short' })
    // The later, shorter deadline fires first; the earlier task still waits out its own 2 s.
    expect(await Promise.race([long.then(() => 'long'), short.then(() => 'short')])).toBe('short')
    const shortResult = await short
    expect(shortResult.status).toBe(504)
    expect(shortResult.json()).toMatchObject({ code: 'timeout', attempts: [{ node_id: 'silent', reason: 'timed out waiting for the client' }] })
    const longResult = await long
    expect(longResult.status).toBe(504)
    expect(performance.now() - startedLong).toBeGreaterThanOrEqual(1900)
    expect(silent.received).toEqual(['long', 'short'])
  })

  test('a WebSocket client that disconnects mid-task has the task retried elsewhere at once', async () => {
    const mls = server({ task_timeout: 20 })
    const quitter = await startWsAgent(mls.wsUrl, { nodeId: 'quitter', region: 'usa', weight: 5, answer: () => null })
    const steady = await startWsAgent(mls.wsUrl, { nodeId: 'steady', region: 'usa' })
    defer(quitter.close)
    defer(steady.close)
    quitter.socket.addEventListener('message', (event) => {
      if (JSON.parse(String(event.data)).type === 'task') quitter.socket.close()
    })
    const result = await postTask(mls.url, { region: 'usa', payload: 'important' })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('steady')
    expect(result.headers.get('x-moonlight-attempts')).toBe('2')
    // Had it waited for the 20 s task_timeout, the answer would be a 504: timeouts are not retried.
    expect(quitter.received).toEqual(['important'])
  })

  test('an ejected client gets one trial task after its back-off, and a success restores it', async () => {
    const mls = server({ health: { failures_to_eject: 1, ejection_time: 0.3, max_ejection_time: 5, max_ejected_percent: 50 } })
    let failing = true
    const flaky = await startHttpAgent(mls.url, {
      nodeId: 'flaky',
      region: 'asia',
      work: () => (failing ? new Response('fail', { status: 500 }) : Response.json({ ok: 'flaky' })),
    })
    const steady = await startHttpAgent(mls.url, { nodeId: 'steady', region: 'asia' })
    defer(flaky.stop)
    defer(steady.stop)
    // Round-robin reaches flaky within two tasks; its one 500 ejects it.
    for (let i = 0; i < 2; i++) expect((await postTask(mls.url, { region: 'asia', payload: i })).status).toBe(200)
    expect(mls.server.registry.get('flaky')!.state).toBe('ejected')
    failing = false
    await waitFor(() => mls.server.registry.get('flaky')!.state === 'probation', 'the back-off to end')
    const nodes = []
    for (let i = 0; i < 4; i++) nodes.push((await postTask(mls.url, { region: 'asia', payload: i })).headers.get('x-moonlight-node'))
    expect(nodes).toContain('flaky')
    expect(mls.server.registry.get('flaky')!.state).toBe('healthy')
  })
})

describe('answers the server cannot pass on', () => {
  test('an invalid task_response fails that attempt at once and the task is retried elsewhere', async () => {
    const mls = server({ task_timeout: 20 })
    const garbled = await startWsAgent(mls.wsUrl, { nodeId: 'garbled', region: 'usa', weight: 5, answer: () => ({ response: 'x', status: 150 }) })
    const fine = await startWsAgent(mls.wsUrl, { nodeId: 'fine', region: 'usa' })
    defer(garbled.close)
    defer(fine.close)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('fine')
    expect(result.headers.get('x-moonlight-attempts')).toBe('2')
    expect((await garbled.next('error')).payload.message).toMatch(/status/)
    // With no retry left: a 502 that says why, not a 500 and not a wait for the timeout.
    const strict = server({ task_timeout: 20, retry_count: 0 })
    const badHeader = await startWsAgent(strict.wsUrl, { nodeId: 'bad-header', region: 'emea', answer: () => ({ response: 'x', headers: { 'a b': 'c' } }) })
    defer(badHeader.close)
    const alone = await postTask(strict.url, { region: 'emea', payload: 1 })
    expect(alone.status).toBe(502)
    expect(alone.json().attempts[0].reason).toMatch(/task_response was invalid: payload\.headers/)
  })
})

describe('stopping while tasks are still running', () => {
  test('a task longer than the grace period answers 503 shutting_down instead of losing its connection', async () => {
    const mls = startTestServer()
    const slow = await startHttpAgent(mls.url, { nodeId: 'slow', region: 'usa', work: () => Bun.sleep(3000).then(() => Response.json({ late: true })) })
    defer(slow.stop)
    const pending = postTask(mls.url, { region: 'usa', payload: 1 })
    await waitFor(() => mls.server.registry.get('slow')!.inFlight === 1, 'the task to reach the agent')
    await mls.server.stop(200)
    const result = await pending
    expect(result.status).toBe(503)
    expect(result.json()).toMatchObject({ code: 'shutting_down', region: 'usa' })
  })

  test('a broadcast cut short by the stop says so for each client still owing an answer', async () => {
    const mls = startTestServer()
    const answers = await startWsAgent(mls.wsUrl, { nodeId: 'answers', region: 'asia' })
    const silent = await startWsAgent(mls.wsUrl, { nodeId: 'silent', region: 'asia', answer: () => null })
    defer(answers.close)
    defer(silent.close)
    const pending = postTask(mls.url, { region: 'asia', mode: 'broadcast', payload: 'all' })
    await waitFor(() => silent.received.length === 1, 'the broadcast to reach the silent agent')
    await mls.server.stop(200)
    const result = await pending
    expect(result.status).toBe(200)
    const byNode = Object.fromEntries(result.json().results.map((entry: { node_id: string }) => [entry.node_id, entry]))
    expect(byNode.answers).toMatchObject({ status: 200 })
    expect(byNode.silent).toMatchObject({ status: 503, error: 'the server shut down before the client answered' })
  })
})

describe('the deadline timer', () => {
  /** Runs the fixture; resolves with its output, or with "still running" if it has not exited after `ms`. */
  async function runFixture(taskTimeout: number, ms: number): Promise<{ stdout: string; stderr: string } | 'still running'> {
    const child = Bun.spawn([process.execPath, join(import.meta.dir, '..', '..', 'fixtures', 'stop-and-exit.ts'), String(taskTimeout)], {
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const outcome = await Promise.race([child.exited.then(() => 'exited' as const), Bun.sleep(ms).then(() => 'still running' as const)])
    if (outcome === 'still running') {
      child.kill()
      return outcome
    }
    return { stdout: await new Response(child.stdout).text(), stderr: await new Response(child.stderr).text() }
  }

  test('a stopped server leaves no timer behind: the process exits long before task_timeout', async () => {
    const result = await runFixture(600, 4_000)
    expect(result).not.toBe('still running')
    expect(result).toMatchObject({ stdout: 'status 200\nstatus 503\n' })
  })

  test('a task_timeout past what setTimeout can hold (about 24.8 days) neither fires at once nor spins', async () => {
    const result = await runFixture(60 * 60 * 24 * 30, 4_000)
    expect(result).toMatchObject({ stdout: 'status 200\nstatus 503\n' })
    if (result === 'still running') return
    expect(result.stderr).not.toContain('TimeoutOverflowWarning')
  })
})
