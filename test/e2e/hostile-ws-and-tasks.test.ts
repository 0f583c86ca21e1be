/**
 * A hostile pass over the WebSocket agent protocol, the stored-task API and the operator actions:
 * what a broken or malicious agent or caller sends, and what the server must do about it. Each test
 * drives the real server over real sockets.
 */
import { describe, expect, test } from 'bun:test'
import { openWs, postTask, startWsAgent, type TestServer, TOKEN, testScope, waitFor } from '../helpers.ts'
import { submitTask, TASK_HEADERS } from '../task-calls.ts'

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
})
