import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import { postTask, SEED_CONFIG, startHttpAgent, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()
const LIMIT = 64 * 1024

/** An answer of exactly `bytes` bytes, as one declared-length body or as a chunked stream of 8 KiB pieces. */
function answerOf(bytes: number, chunked: boolean): Response {
  const body = 'x'.repeat(bytes)
  if (!chunked) return new Response(body, { headers: { 'content-type': 'text/plain' } })
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      const encoded = new TextEncoder().encode(body)
      for (let offset = 0; offset < encoded.length; offset += 8192) controller.enqueue(encoded.slice(offset, offset + 8192))
      controller.close()
    },
  })
  return new Response(stream, { headers: { 'content-type': 'text/plain' } })
}

describe('max_answer_bytes', () => {
  for (const chunked of [false, true]) {
    const how = chunked ? 'a chunked' : 'a declared-length'
    test(`${how} HTTP answer of exactly the limit comes through whole`, async () => {
      const mls = server({ max_answer_bytes: LIMIT })
      const agent = await startHttpAgent(mls.url, { nodeId: 'exact', region: 'usa', work: () => answerOf(LIMIT, chunked) })
      defer(agent.stop)
      const result = await postTask(mls.url, { region: 'usa', payload: 1 })
      expect(result.status).toBe(200)
      expect(result.text).toBe('x'.repeat(LIMIT))
    })

    test(`${how} HTTP answer over the limit is a 502 answer_too_large, not retried and not held against the client`, async () => {
      const mls = server({ max_answer_bytes: LIMIT })
      const big = await startHttpAgent(mls.url, { nodeId: 'big', region: 'usa', weight: 5, work: () => answerOf(LIMIT + 1, chunked) })
      const other = await startHttpAgent(mls.url, { nodeId: 'other', region: 'usa', weight: 1 })
      defer(big.stop)
      defer(other.stop)
      const result = await postTask(mls.url, { region: 'usa', payload: 'huge' })
      expect(result.status).toBe(502)
      expect(result.json()).toMatchObject({
        code: 'answer_too_large',
        error: "the client's answer was too large",
        attempts: [{ node_id: 'big', reason: `answered more than max_answer_bytes (${LIMIT} bytes)` }],
      })
      // The work was done once; doing it again elsewhere would not make the answer smaller.
      expect(other.received).toEqual([])
      const clients = await (await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()
      expect(clients.clients.find((client: { node_id: string }) => client.node_id === 'big')).toMatchObject({ state: 'healthy', consecutive_failures: 0 })
    })
  }

  test('a compressed answer is held to the limit by its unpacked size, not its declared length', async () => {
    const mls = server({ max_answer_bytes: LIMIT })
    const packed = Bun.gzipSync('x'.repeat(50 * LIMIT))
    expect(packed.byteLength).toBeLessThan(LIMIT)
    const agent = await startHttpAgent(mls.url, {
      nodeId: 'zipped',
      region: 'usa',
      work: () => new Response(packed, { headers: { 'content-type': 'text/plain', 'content-encoding': 'gzip', 'content-length': String(packed.byteLength) } }),
    })
    defer(agent.stop)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ code: 'answer_too_large' })
  })

  test('a declared length beside a chunked body does not let the body past the limit', async () => {
    const mls = server({ max_answer_bytes: LIMIT })
    // Bun.serve would not send both headers: a raw socket plays the misbehaving agent.
    const chunk = 'x'.repeat(16 * 1024)
    const listener = Bun.listen({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        data(socket) {
          let reply = 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\ntransfer-encoding: chunked\r\n\r\n'
          for (let i = 0; i < 8; i++) reply += `${chunk.length.toString(16)}\r\n${chunk}\r\n`
          socket.write(`${reply}0\r\n\r\n`)
        },
      },
    })
    defer(() => listener.stop(true))
    const heartbeat = await fetch(`${mls.url}/client/heartbeat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ip: '127.0.0.1', node_id: 'liar', token: TOKEN, region: 'usa', port: listener.port }),
    })
    expect(heartbeat.status).toBe(200)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ code: 'answer_too_large' })
  })

  test('in a broadcast, the client whose answer is too large is reported as such, the others answer', async () => {
    const mls = server({ max_answer_bytes: LIMIT })
    const big = await startHttpAgent(mls.url, { nodeId: 'big', region: 'usa', work: () => answerOf(LIMIT + 1, false) })
    const fine = await startHttpAgent(mls.url, { nodeId: 'fine', region: 'usa' })
    defer(big.stop)
    defer(fine.stop)
    const result = await postTask(mls.url, { region: 'usa', mode: 'broadcast', payload: 'all' })
    expect(result.status).toBe(200)
    const byNode = Object.fromEntries(result.json().results.map((entry: { node_id: string }) => [entry.node_id, entry]))
    expect(byNode.big).toMatchObject({ status: 502, error: `answered more than max_answer_bytes (${LIMIT} bytes)` })
    expect(byNode.fine).toMatchObject({ status: 200, response: { node: 'fine', echo: 'all' } })
    expect(mls.server.registry.get('big')).toMatchObject({ state: 'healthy', consecutiveFailures: 0 })
  })

  test('a reload changes the limit for HTTP answers at once', async () => {
    const mls = server({ max_answer_bytes: LIMIT })
    const agent = await startHttpAgent(mls.url, { nodeId: 'grows', region: 'usa', work: () => answerOf(2 * LIMIT, false) })
    defer(agent.stop)
    expect((await postTask(mls.url, { region: 'usa', payload: 1 })).status).toBe(502)
    mls.server.reload(parseConfig({ ...SEED_CONFIG, max_answer_bytes: 4 * LIMIT }, 'test'))
    const result = await postTask(mls.url, { region: 'usa', payload: 2 })
    expect(result.status).toBe(200)
    expect(result.text).toHaveLength(2 * LIMIT)
  })

  test('a WebSocket agent whose message passes the limit is cut off, and its task is retried on another agent', async () => {
    const mls = server({ max_answer_bytes: LIMIT })
    const big = await startWsAgent(mls.wsUrl, { nodeId: 'ws-big', region: 'usa', weight: 5, answer: () => ({ response: 'x'.repeat(LIMIT + 1) }) })
    const small = await startWsAgent(mls.wsUrl, { nodeId: 'ws-small', region: 'usa', weight: 1 })
    defer(big.close)
    defer(small.close)
    const closed = new Promise<number>((resolve) => big.socket.addEventListener('close', (event) => resolve(event.code)))
    const result = await postTask(mls.url, { region: 'usa', payload: 'job' })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('ws-small')
    expect(result.headers.get('x-moonlight-attempts')).toBe('2')
    expect(await closed).toBe(1009)
    await waitFor(() => !mls.server.registry.get('ws-big'), 'the cut-off agent to leave the registry')
  })

  test('with retries exhausted, the caller learns the WebSocket answer was too large', async () => {
    const mls = server({ max_answer_bytes: LIMIT, retry_count: 0 })
    const big = await startWsAgent(mls.wsUrl, { nodeId: 'ws-big', region: 'usa', answer: () => ({ response: 'x'.repeat(LIMIT + 1) }) })
    defer(big.close)
    const result = await postTask(mls.url, { region: 'usa', payload: 'job' })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({
      code: 'all_attempts_failed',
      attempts: [{ node_id: 'ws-big', reason: `the client sent a message larger than max_answer_bytes (${LIMIT} bytes) and was disconnected` }],
    })
  })
})
