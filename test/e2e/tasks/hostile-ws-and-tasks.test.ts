/**
 * A hostile pass over the WebSocket agent protocol, the stored-task API and the operator actions:
 * what a broken or malicious agent or caller sends, and what the server must do about it. Each test
 * drives the real server over real sockets.
 */
import { describe, expect, test } from 'bun:test'
import { connect } from 'node:net'
import { openWs, postTask, startWsAgent, type TestServer, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { submitTask, TASK_HEADERS } from '../../support/task-calls.ts'

const { defer, server } = testScope()

async function get(url: string, path: string, headers: Record<string, string> = TASK_HEADERS) {
  const response = await fetch(`${url}${path}`, { headers })
  return { response, text: await response.text() }
}

async function cancel(url: string, taskId: string, headers: Record<string, string> = TASK_HEADERS) {
  const response = await fetch(`${url}/task/${taskId}`, { method: 'DELETE', headers })
  return { response, text: await response.text() }
}

/** A WebSocket agent that holds every task it gets (answers none); `held` lists their ids. */
async function holdingAgent(mls: TestServer, nodeId: string, region = 'us-east-1') {
  const held: string[] = []
  const agent = await startWsAgent(mls.wsUrl, {
    nodeId,
    region,
    answer: (_payload, taskId) => {
      held.push(taskId)
      return null
    },
  })
  defer(agent.close)
  return { agent, held }
}

/** A masked client frame written by hand: any opcode, any bytes (fin set). */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const mask = Buffer.from([9, 8, 7, 6])
  const length = payload.length
  const header = length < 126 ? Buffer.from([0x80 | opcode, 0x80 | length]) : Buffer.from([0x80 | opcode, 0x80 | 126, length >> 8, length & 0xff])
  return Buffer.concat([header, mask, Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!))])
}

/** A raw TCP WebSocket client: upgrade by hand, then write whatever frames a test wants. */
async function rawWs(mls: TestServer) {
  const url = new URL(mls.wsUrl)
  const socket = connect(Number(url.port), url.hostname)
  defer(() => socket.destroy())
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  let received = Buffer.alloc(0)
  const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk])
  })
  socket.write(
    `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  )
  await waitFor(() => received.includes('\r\n\r\n'), 'the upgrade answer')
  return {
    write: (frame: Buffer) => socket.write(frame),
    text: (text: string) => socket.write(clientFrame(0x1, Buffer.from(text))),
    received: () => received,
    ended,
  }
}

describe('WebSocket agents that misbehave', () => {
  test('two registers with different node ids sent together on one socket: once it closes, neither node is left behind', async () => {
    const mls = server()
    // "held" is someone's live node: a register for it waits on a ping to its holder (1.5 s).
    const holder = await startWsAgent(mls.wsUrl, { nodeId: 'held', region: 'usa' })
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    peer.send({ type: 'register', payload: { node_id: 'held', token: TOKEN, region: 'usa' } })
    peer.send({ type: 'register', payload: { node_id: 'second', token: TOKEN, region: 'usa' } })
    // The holder leaves while its node is being asked about: the first register then takes "held".
    holder.close()
    await waitFor(() => peer.messages.length >= 2, 'an answer to each register', 5000)
    // Taken in turn: the first takes the node its holder left, the second is refused as another id on this connection.
    expect(peer.messages.map((message) => [message.type, message.payload.node_id ?? message.payload.code])).toEqual([
      ['registered', 'held'],
      ['error', 'already_registered'],
    ])
    peer.close()
    await peer.closed
    await waitFor(() => mls.server.registry.get('held') === undefined, 'the node "held" to leave with its socket')
    // Whatever the server made of the two registers, nothing may outlive the socket they came over.
    await Bun.sleep(200)
    expect([...mls.server.registry.all()].map((client) => client.nodeId)).toEqual([])
  })

  test('the same register sent twice while its node is being asked about: the agent is registered once and keeps its socket', async () => {
    const mls = server()
    const holder = await startWsAgent(mls.wsUrl, { nodeId: 'twice', region: 'usa' })
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    const register = { type: 'register', payload: { node_id: 'twice', token: TOKEN, region: 'usa' } }
    peer.send(register)
    peer.send(register)
    holder.close()
    await waitFor(() => peer.messages.length >= 2, 'an answer to each register', 5000)
    // The second is the same node on the same connection: a refresh, not a rival to be refused (4009).
    expect(peer.messages.map((message) => message.type)).toEqual(['registered', 'registered'])
    expect(peer.socket.readyState).toBe(WebSocket.OPEN)
    peer.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'task') peer.send({ type: 'task_response', payload: { task_id: message.task_id, response: 'from the peer' } })
    })
    const result = await postTask(mls.url, { region: 'usa', payload: 'still mine' })
    expect([result.status, result.text]).toEqual([200, '"from the peer"'])
  })

  test('an agent answering a task it was not given gets unknown_task; the caller gets the answer of the agent that had it', async () => {
    const mls = server()
    const { agent, held } = await holdingAgent(mls, 'owner', 'usa')
    const thief = await openWs(mls.wsUrl)
    defer(thief.close)
    thief.send({ type: 'register', payload: { node_id: 'thief', token: TOKEN, region: 'europe' } })
    await thief.next('registered')
    const call = postTask(mls.url, { region: 'usa', payload: 'mine' })
    await waitFor(() => held.length === 1, 'the owner holds the task')
    const taskId = held[0]!
    thief.send({ type: 'task_response', payload: { task_id: taskId, response: 'forged', status: 200 } })
    expect((await thief.next('error')).payload).toMatchObject({ code: 'unknown_task' })
    agent.send({ type: 'task_response', payload: { task_id: taskId, response: 'real' } })
    const result = await call
    expect([result.status, result.text, result.headers.get('x-moonlight-node')]).toEqual([200, '"real"', 'owner'])
    // A second answer to the same task is no one's: unknown_task, and the thief was not blamed for trying.
    agent.send({ type: 'task_response', payload: { task_id: taskId, response: 'again' } })
    expect((await agent.next('error')).payload).toMatchObject({ code: 'unknown_task' })
    expect(mls.server.registry.get('owner')).toMatchObject({ state: 'healthy', consecutiveFailures: 0 })
  })

  test('a text frame of invalid UTF-8 from an agent holding a task: the socket is cut, the task is retried on another agent, the server lives', async () => {
    const mls = server()
    const raw = await rawWs(mls)
    raw.text(JSON.stringify({ type: 'register', payload: { node_id: 'garbled', token: TOKEN, region: 'usa' } }))
    await waitFor(() => mls.server.registry.get('garbled') !== undefined, 'garbled to register')
    const call = postTask(mls.url, { region: 'usa', payload: 'x' })
    await waitFor(() => raw.received().includes('"type":"task"'), 'the task to reach garbled')
    const good = await startWsAgent(mls.wsUrl, { nodeId: 'good', region: 'usa' })
    defer(good.close)
    raw.write(clientFrame(0x1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])))
    await raw.ended
    const result = await call
    expect([result.status, result.headers.get('x-moonlight-node'), result.headers.get('x-moonlight-attempts')]).toEqual([200, 'good', '2'])
    expect(mls.server.registry.get('garbled')).toBeUndefined()
  })

  test('a message that is a top-level array nested 100 000 deep gets invalid_message; the socket stays usable', async () => {
    const mls = server()
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    peer.send(`${'['.repeat(100_000)}${']'.repeat(100_000)}`)
    expect((await peer.next('error')).payload.code).toBe('invalid_message')
    peer.send({ type: 'register', payload: { node_id: 'after-deep', token: TOKEN, region: 'usa' } })
    expect((await peer.next('registered')).payload.node_id).toBe('after-deep')
  })

  test('heartbeats with a weight of the wrong type or range are invalid_message each, and the weight stays', async () => {
    const mls = server()
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'beating', region: 'usa', weight: 3 })
    defer(agent.close)
    for (const weight of ['"2"', '-1', '1.5', '1001', 'null', '1e400', '[1]', '{}']) {
      agent.send(`{"type":"heartbeat","payload":{"weight":${weight}}}`)
      expect([weight, (await agent.next()).payload.code]).toEqual([weight, 'invalid_message'])
    }
    for (const payload of ['null', '[]', '"x"']) {
      agent.send(`{"type":"heartbeat","payload":${payload}}`)
      expect([payload, (await agent.next()).payload.code]).toEqual([payload, 'invalid_message'])
    }
    expect(mls.server.registry.get('beating')?.weight).toBe(3)
    agent.send({ type: 'heartbeat', payload: { weight: 2 } })
    expect((await agent.next()).type).toBe('heartbeat_ack')
    expect(mls.server.registry.get('beating')?.weight).toBe(2)
  })
})

describe('stored tasks against hostile callers', () => {
  test('a keyed async task cancelled while its agent holds it: a retry with the key is the same cancelled task, never a second run', async () => {
    const mls = server()
    const { agent, held } = await holdingAgent(mls, 'slow')
    const body = { region: 'us-east-1', payload: { charge: 1 }, mode: 'async' }
    const first = JSON.parse((await submitTask(mls.url, body, { 'idempotency-key': 'charge-1' })).text)
    await waitFor(() => held.length === 1, 'the agent holds the task')
    expect((await cancel(mls.url, first.task_id)).response.status).toBe(200)
    await agent.next('cancel')
    const retry = await submitTask(mls.url, body, { 'idempotency-key': 'charge-1' })
    expect(retry.response.status).toBe(202)
    expect(retry.response.headers.get('idempotent-replayed')).toBe('true')
    expect(JSON.parse(retry.text)).toMatchObject({ task_id: first.task_id, state: 'cancelled' })
    await Bun.sleep(300)
    expect(held).toEqual([first.task_id])
  })

  test('a keyed sync task cancelled while its agent holds it: the retry with the key replays the cancel, never a second run', async () => {
    const mls = server()
    const { held } = await holdingAgent(mls, 'slow')
    const body = { region: 'us-east-1', payload: { charge: 2 } }
    const call = submitTask(mls.url, body, { 'idempotency-key': 'charge-2' })
    await waitFor(() => held.length === 1, 'the agent holds the task')
    expect((await cancel(mls.url, held[0]!)).response.status).toBe(200)
    const first = await call
    expect([first.response.status, JSON.parse(first.text).code]).toEqual([409, 'cancelled'])
    const retry = await submitTask(mls.url, body, { 'idempotency-key': 'charge-2' })
    expect([retry.response.status, JSON.parse(retry.text).code, retry.response.headers.get('idempotent-replayed')]).toEqual([409, 'cancelled', 'true'])
    await Bun.sleep(300)
    expect(held).toHaveLength(1)
  })

  test('without a token, a task that exists and one that does not answer alike: no oracle for task ids', async () => {
    const mls = server()
    await holdingAgent(mls, 'any')
    const { task_id } = JSON.parse((await submitTask(mls.url, { region: 'us-east-1', payload: 1, mode: 'async' })).text)
    const prefix = task_id.slice(0, task_id.lastIndexOf('-'))
    const unknown = `${prefix}-zzzz`
    const callers: Record<string, string>[] = [{}, { authorization: 'Bearer not-a-real-token-000' }]
    for (const headers of callers) {
      const existing = await get(mls.url, `/task/${task_id}`, headers)
      const missing = await get(mls.url, `/task/${unknown}`, headers)
      expect([missing.response.status, JSON.parse(missing.text).code]).toEqual([existing.response.status, JSON.parse(existing.text).code])
      const cancelExisting = await cancel(mls.url, task_id, headers)
      const cancelMissing = await cancel(mls.url, unknown, headers)
      expect(cancelMissing.response.status).toBe(cancelExisting.response.status)
    }
    expect(JSON.parse((await get(mls.url, `/task/${task_id}`)).text).state).not.toBe('cancelled')
  })

  test('?wait= that is not a number of seconds from 0 to 60 is a 400 in JSON', async () => {
    const mls = server()
    await holdingAgent(mls, 'any')
    const { task_id } = JSON.parse((await submitTask(mls.url, { region: 'us-east-1', payload: 1, mode: 'async' })).text)
    for (const wait of ['NaN', '-1', '1e400', 'Infinity', '-Infinity', 'abc', '60.001', '1e9']) {
      const result = await get(mls.url, `/task/${task_id}/result?wait=${wait}`)
      expect([wait, result.response.status, JSON.parse(result.text).code]).toEqual([wait, 400, 'invalid_body'])
    }
  })

  test('odd task ids (very long, percent-encoded slashes, NUL, broken escapes, non-ASCII) are a 404 unknown_task in JSON', async () => {
    const mls = server()
    for (const id of ['x'.repeat(8000), '..%2f..%2fclients', '%00', '%E0%A4%A', '%ZZ', 'a%2Fb', encodeURIComponent('☃')]) {
      for (const method of ['GET', 'DELETE']) {
        const response = await fetch(`${mls.url}/task/${id}`, { method, headers: TASK_HEADERS })
        expect([method, id.slice(0, 20), response.status, (await response.json()).code]).toEqual([method, id.slice(0, 20), 404, 'unknown_task'])
      }
    }
  })

  test('an Idempotency-Key reused with the same body in another key order or spacing is 422 (the bytes are compared), and nothing runs again', async () => {
    const mls = server()
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'counted', region: 'us-east-1' })
    defer(agent.close)
    const first = await submitTask(mls.url, '{"region":"us-east-1","payload":{"a":1,"b":2}}', { 'idempotency-key': 'bytes' })
    expect(first.response.status).toBe(200)
    for (const body of [
      '{"payload":{"a":1,"b":2},"region":"us-east-1"}',
      '{"region":"us-east-1", "payload":{"a":1,"b":2}}',
      '{"region":"us-east-1","payload":{"b":2,"a":1}}',
    ]) {
      const again = await submitTask(mls.url, body, { 'idempotency-key': 'bytes' })
      expect([again.response.status, JSON.parse(again.text).code]).toEqual([422, 'idempotency_mismatch'])
    }
    const same = await submitTask(mls.url, '{"region":"us-east-1","payload":{"a":1,"b":2}}', { 'idempotency-key': 'bytes' })
    expect([same.response.status, same.response.headers.get('idempotent-replayed')]).toEqual([200, 'true'])
    expect(agent.received).toEqual([{ a: 1, b: 2 }])
  })
})

describe('operator actions against hostile bodies', () => {
  test('eject bodies that are not {"seconds": 0 < n <= 86400} are a 400 in JSON and eject nothing', async () => {
    const mls = server()
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'target', region: 'usa' })
    defer(agent.close)
    const cases: Array<[string, string]> = [
      ['{"seconds":0}', 'invalid_body'],
      ['{"seconds":1e400}', 'invalid_body'],
      ['{"seconds":"30"}', 'invalid_body'],
      ['{"seconds":30,"extra":1}', 'invalid_body'],
      ['{"__proto__":{"seconds":1}}', 'invalid_body'],
      ['null', 'invalid_body'],
      ['nope', 'invalid_json'],
      [`${'['.repeat(5000)}${']'.repeat(5000)}`, 'too_deep'],
    ]
    for (const [body, code] of cases) {
      const response = await fetch(`${mls.url}/clients/target/eject`, { method: 'POST', headers: TASK_HEADERS, body })
      expect([body.slice(0, 30), response.status, (await response.json()).code]).toEqual([body.slice(0, 30), 400, code])
    }
    expect(mls.server.registry.get('target')?.state).toBe('healthy')
  })
})
