import { afterEach, describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  openWs,
  postTask,
  SEED_CONFIG,
  type SpawnedServer,
  spawnServer,
  startHttpAgent,
  startWsAgent,
  TOKEN,
  testScope,
  waitFor,
} from '../../support/helpers.ts'

const { defer, server } = testScope()
const spawned: SpawnedServer[] = []
afterEach(async () => {
  for (const child of spawned.splice(0)) {
    child.process.kill('SIGKILL')
    await child.exited
  }
})

const DEEP = 100_000
const deepArray = (depth: number) => '['.repeat(depth) + ']'.repeat(depth)

/** The server as its own process: what is at stake is whether the process survives. */
async function spawnSeedServer(overrides: Record<string, unknown> = {}): Promise<SpawnedServer> {
  const dir = mkdtempSync(join(tmpdir(), 'mls-answers-'))
  const path = join(dir, 'mls.json')
  writeFileSync(path, JSON.stringify({ ...SEED_CONFIG, ...overrides }))
  const child = await spawnServer(['--config', path, '--port', '0', '--host', '127.0.0.1'])
  spawned.push(child)
  expect(child.url).not.toBe('')
  return child
}

describe('an answer the server cannot pass on fails that attempt, and nothing else', () => {
  test('a WebSocket answer nested 100 000 deep: the attempt fails with a reason, the task goes elsewhere, the process lives', async () => {
    const mls = await spawnSeedServer()
    const wsUrl = `${mls.url.replace(/^http/, 'ws')}/ws`
    // The hostile agent writes its answer by hand: JSON.stringify could not build it either.
    const evil = await openWs(wsUrl)
    defer(evil.close)
    evil.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'task') evil.send(`{"type":"task_response","payload":{"task_id":${JSON.stringify(message.task_id)},"response":${deepArray(DEEP)}}}`)
    })
    evil.send({ type: 'register', payload: { node_id: 'evil', token: TOKEN, region: 'usa', weight: 1000 } })
    expect((await evil.next('registered')).payload.node_id).toBe('evil')
    const good = await startWsAgent(wsUrl, { nodeId: 'good', region: 'usa' })
    defer(good.close)

    const result = await postTask(mls.url, { region: 'usa', payload: 'job' })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('good')
    expect(result.headers.get('x-moonlight-attempts')).toBe('2')
    const error = await evil.next('error')
    expect(error.payload).toMatchObject({ code: 'too_deep', message: expect.stringContaining('nested deeper than 1000 levels') })
    // With no one else to go to, the caller hears why.
    good.close()
    await waitFor(async () => (await (await fetch(`${mls.url}/status`)).json()).clients === 1, 'the good agent to leave')
    const alone = await postTask(mls.url, { region: 'usa', payload: 'again' })
    expect(alone.status).toBe(502)
    expect(alone.json().attempts).toContainEqual({ node_id: 'evil', kind: 'invalid_answer', reason: expect.stringContaining('nested deeper than 1000 levels') })
    expect(mls.process.exitCode).toBeNull()
    expect((await fetch(`${mls.url}/healthz`)).status).toBe(200)
  })

  test('a WebSocket answer at the depth limit (1000 with its envelope) is passed on as it came', async () => {
    const mls = server()
    // The message's own object and its payload are two of the 1000 levels.
    const answer = deepArray(998)
    const agent = await openWs(mls.wsUrl)
    defer(agent.close)
    agent.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'task') agent.send(`{"type":"task_response","payload":{"task_id":${JSON.stringify(message.task_id)},"response":${answer}}}`)
    })
    agent.send({ type: 'register', payload: { node_id: 'deep-ok', token: TOKEN, region: 'usa' } })
    await agent.next('registered')
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(200)
    expect(result.text).toBe(answer)
  })

  test('a broadcast answer too deep to serialize again is shown as text, and the other answers come through', async () => {
    const mls = server()
    const deep = await startHttpAgent(mls.url, {
      nodeId: 'deep',
      region: 'usa',
      work: () => new Response(deepArray(DEEP), { headers: { 'content-type': 'application/json' } }),
    })
    const plain = await startHttpAgent(mls.url, { nodeId: 'plain', region: 'usa', work: () => Response.json({ ok: true }) })
    defer(deep.stop)
    defer(plain.stop)
    const result = await postTask(mls.url, { region: 'usa', payload: 1, mode: 'broadcast' })
    expect(result.status).toBe(200)
    const results = Object.fromEntries(result.json().results.map((each: { node_id: string }) => [each.node_id, each]))
    expect(results.deep).toMatchObject({ status: 200, response: deepArray(DEEP) })
    expect(results.plain).toMatchObject({ status: 200, response: { ok: true } })
  })
})

describe("agent headers that would break the caller's answer", () => {
  /** A WebSocket agent answering with `headers`, next to a well-behaved HTTP agent to retry on. */
  async function answerWithHeaders(headers: Record<string, string>) {
    const mls = server({ retry_count: 1 })
    const bad = await startWsAgent(mls.wsUrl, { nodeId: 'bad-headers', region: 'usa', weight: 1000, answer: () => ({ response: { ok: 'bad' }, headers }) })
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'usa', work: () => Response.json({ ok: 'good' }) })
    defer(bad.close)
    defer(good.stop)
    return { mls, bad, result: await postTask(mls.url, { region: 'usa', payload: 1 }) }
  }

  for (const [what, value] of [
    ['\\x01', 'a\x01b'],
    ['ESC', 'a\x1b[31mred'],
    ['DEL', 'a\x7fb'],
    ['a non-Latin-1 character', 'snow ☃'],
  ] as const) {
    test(`a header value with ${what} makes the answer invalid: the attempt fails and is retried`, async () => {
      const { mls, bad, result } = await answerWithHeaders({ 'x-note': value })
      expect(result.status).toBe(200)
      expect(result.json()).toEqual({ ok: 'good' })
      expect(result.headers.get('x-moonlight-attempts')).toBe('2')
      const error = await bad.next('error')
      expect(error.payload.message).toContain('headers.x-note')
      // It counts as the agent's failure, not a success.
      expect(mls.server.registry.get('bad-headers')).toMatchObject({ successes: 0, failures: 1 })
    })
  }

  for (const name of ['bad name', 'x:y', 'x\ny']) {
    test(`a header name that is not an HTTP token (${JSON.stringify(name)}) makes the answer invalid: the attempt fails and is retried`, async () => {
      const { bad, result } = await answerWithHeaders({ [name]: 'v' })
      expect(result.status).toBe(200)
      expect(result.json()).toEqual({ ok: 'good' })
      expect(result.headers.get('x-moonlight-attempts')).toBe('2')
      expect((await bad.next('error')).payload.code).toBe('invalid_message')
    })
  }

  test('tabs, spaces and Latin-1 pass', async () => {
    const { result } = await answerWithHeaders({ 'x-note': 'a\tb c é' })
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ ok: 'bad' })
    expect(result.headers.get('x-note')).toBe('a\tb c é')
  })

  test('framing and hop-by-hop headers are never relayed; the body still decodes', async () => {
    const { result } = await answerWithHeaders({
      'Content-Encoding': 'gzip',
      'Content-Length': '3',
      'Transfer-Encoding': 'chunked',
      Connection: 'close',
      'Keep-Alive': 'timeout=1',
      Upgrade: 'h2c',
      TE: 'trailers',
      Trailer: 'x-sum',
      'Proxy-Connection': 'close',
      'X-Kept': 'yes',
    })
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ ok: 'bad' })
    expect(result.headers.get('content-encoding')).toBeNull()
    expect(result.headers.get('transfer-encoding')).toBeNull()
    expect(result.headers.get('upgrade')).toBeNull()
    expect(result.headers.get('trailer')).toBeNull()
    expect(result.headers.get('keep-alive')).toBeNull()
    expect(result.headers.get('x-kept')).toBe('yes')
  })
})

describe('WebSocket answers that name no headers of their own', () => {
  test("share one header record inside the server, yet each caller gets its own task's id, node and attempts, and no other answer's headers", async () => {
    const mls = server()
    // Every third answer names a header of its own; the others name none.
    const answer = (nodeId: string) => (payload: unknown, taskId: string) => ({
      response: { node: nodeId, task: taskId, payload },
      ...((payload as number) % 3 === 0 ? { headers: { 'x-own': `${nodeId}-${payload}` } } : {}),
    })
    const a = await startWsAgent(mls.wsUrl, { nodeId: 'ws-a', region: 'usa', answer: answer('ws-a') })
    const b = await startWsAgent(mls.wsUrl, { nodeId: 'ws-b', region: 'usa', answer: answer('ws-b') })
    defer(a.close)
    defer(b.close)

    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => postTask(mls.url, { region: 'usa', payload: i + 1 })))
    const nodes = new Set<string>()
    for (const result of results) {
      expect(result.status).toBe(200)
      const body = result.json()
      nodes.add(body.node)
      expect(result.headers.get('x-task-id')).toBe(body.task)
      expect(result.headers.get('x-moonlight-node')).toBe(body.node)
      expect(result.headers.get('x-moonlight-attempts')).toBe('1')
      expect(result.headers.get('content-type')).toBe('application/json')
      expect(result.headers.get('x-own')).toBe(body.payload % 3 === 0 ? `${body.node}-${body.payload}` : null)
    }
    expect(nodes).toEqual(new Set(['ws-a', 'ws-b']))
    expect(new Set(results.map((result) => result.headers.get('x-task-id'))).size).toBe(30)
  })
})
