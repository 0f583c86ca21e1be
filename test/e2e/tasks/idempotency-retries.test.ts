/**
 * Idempotency keys of tasks that never ran: a retry with the key runs them (one server, the memory store).
 */
import { describe, expect, test } from 'bun:test'
import { openWs, startHeldHttpAgent, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { submitTask, TASK_HEADERS } from '../../support/task-calls.ts'

const { defer, server } = testScope()
const HEADERS = TASK_HEADERS

const submit = submitTask

describe('idempotency keys of tasks that never ran', () => {
  test('a keyed sync task refused 503 no_client (it never ran) can be retried with its key once an agent is there', async () => {
    const mls = server()
    const body = { region: 'us-east-1', payload: { charge: 1 } }
    const first = await submit(mls.url, body, { 'idempotency-key': 'retry-me' })
    // The server tells the caller to come back: nothing ran, no agent was there.
    expect(first.response.status).toBe(503)
    const agent = await startHttpAgent(mls.url, { nodeId: 'late', region: 'us-east-1' })
    defer(agent.stop)
    await waitFor(async () => (await fetch(`${mls.url}/clients`, { headers: HEADERS }).then((r) => r.text())).includes('"late"'), 'the agent registered')
    const retry = await submit(mls.url, body, { 'idempotency-key': 'retry-me' })
    // Not a replay of the 503 for idempotency_ttl (24 h): the task runs now.
    expect([retry.response.status, retry.response.headers.get('idempotent-replayed'), agent.received]).toEqual([200, null, [{ charge: 1 }]])
  })
})

describe('idempotency keys and the slot queue', () => {
  /** A WebSocket agent in eu-west-1 with one slot, and a task that holds it. */
  async function busyAgent(mls: { url: string; wsUrl: string }, nodeId: string) {
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    peer.send({ type: 'register', payload: { node_id: nodeId, token: TOKEN, region: 'eu-west-1', max_in_flight: 1 } })
    await peer.next('registered')
    const blocker = submit(mls.url, { region: 'eu-west-1', payload: 'block', timeout: 8 })
    const held = await peer.next('task')
    /** Answers the held task: the slot frees. */
    const release = async () => {
      peer.send({ type: 'task_response', payload: { task_id: held.task_id, response: 'done' } })
      expect((await blocker).response.status).toBe(200)
    }
    return { release }
  }

  test('a keyed task cancelled while it waits for a slot keeps its key: the same key again is that cancelled task, not a new run', async () => {
    const mls = server()
    const { release } = await busyAgent(mls, 'busy-a')
    const body = { region: 'eu-west-1', payload: { job: 'a' }, mode: 'async', queue_timeout: 5 }
    const { task_id } = JSON.parse((await submit(mls.url, body, { 'idempotency-key': 'k-cancel-async' })).text)
    await waitFor(async () => (await (await fetch(`${mls.url}/status`, { headers: HEADERS })).json()).queue?.depth === 1, 'the task waits for the slot')
    expect((await fetch(`${mls.url}/task/${task_id}`, { method: 'DELETE', headers: HEADERS })).status).toBe(200)
    await waitFor(async () => (await (await fetch(`${mls.url}/status`, { headers: HEADERS })).json()).queue?.depth === 0, 'the wait ends')
    const again = await submit(mls.url, body, { 'idempotency-key': 'k-cancel-async' })
    expect([again.response.headers.get('idempotent-replayed'), JSON.parse(again.text)]).toMatchObject(['true', { task_id, state: 'cancelled' }])
    await release()
  }, 30_000)

  test('a replay waiting on a keyed task that ends without reaching a client (its key freed) runs the request itself', async () => {
    const mls = server()
    const { release } = await busyAgent(mls, 'busy-b')
    const body = { region: 'eu-west-1', payload: { job: 1 }, queue_timeout: 1.5 }
    const first = submit(mls.url, body, { 'idempotency-key': 'k-queue-1' })
    await waitFor(async () => (await (await fetch(`${mls.url}/status`, { headers: HEADERS })).json()).queue?.depth === 1, 'the first waits for the slot')
    const replay = submit(mls.url, body, { 'idempotency-key': 'k-queue-1' })
    const [a, b] = await Promise.all([first, replay])
    expect([a.response.status, JSON.parse(a.text).code]).toEqual([503, 'queue_timeout'])
    // Not "202 running" for a task that no longer exists: its own run, which waits for the slot in turn.
    expect([b.response.status, JSON.parse(b.text).code, b.response.headers.get('idempotent-replayed')]).toEqual([503, 'queue_timeout', null])
    expect(b.response.headers.get('x-task-id')).not.toBe(a.response.headers.get('x-task-id'))
    await release()
  }, 30_000)
})

describe('idempotency keys and the graceful stop', () => {
  test('a keyed replay waiting when the server begins to stop does not run the task a second time: it answers how the task stands', async () => {
    const mls = server()
    const agent = await startHeldHttpAgent(mls.url, { nodeId: 'slow', region: 'us-east-1' })
    const { release } = agent
    defer(agent.stop)
    defer(release)
    const body = { region: 'us-east-1', payload: { charge: 1 } }
    const first = submit(mls.url, body, { 'idempotency-key': 'stop-1' })
    await waitFor(() => agent.received.length === 1, 'the first run reaches the agent')
    const replay = submit(mls.url, body, { 'idempotency-key': 'stop-1' })
    await Bun.sleep(300)
    const stopping = mls.server.stop(3000)
    const replayed = await replay
    // Still running: 202 with the task's view, to be polled (it is not run again to answer sooner).
    expect([replayed.response.status, replayed.response.headers.get('idempotent-replayed'), JSON.parse(replayed.text).state]).toEqual([202, 'true', 'running'])
    release()
    expect((await first).response.status).toBe(200)
    await stopping
    expect(agent.received).toHaveLength(1)
  }, 30_000)
})
