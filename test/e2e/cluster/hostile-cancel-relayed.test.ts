/**
 * Hostile pass: a stored task cancelled while it runs on a WebSocket agent held by another instance
 * (real redis-server, `moonlight serve` instances, a raw WebSocket agent that stops a cancelled task
 * without answering it, as `moonlight agent` does).
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson, type Instance } from '../../support/cluster.ts'
import { openWs, postTask, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { TASK_HEADERS } from '../../support/task-calls.ts'

const { defer } = testScope()
const { redisServer, instance } = clusterScope(defer)

const inFlight = async (at: Instance, nodeId: string): Promise<number> =>
  (await getJson(`${at.url}/clients`)).clients.find((client: { node_id: string }) => client.node_id === nodeId)?.in_flight

describe('a cancel of a relayed task', () => {
  test("frees the agent's slot at its holder at once, as a cancel of a task run by the holder itself does", async () => {
    const redis = await redisServer()
    const config = { task_timeout: 20, queue: { timeout: 2 } }
    const a = await instance(redis.url, 'a', config)
    const b = await instance(redis.url, 'b', config)
    // A one-slot agent on B. Like `moonlight agent`, it stops a cancelled task and sends no answer for it; any other task is answered at once.
    const agent = await openWs(b.wsUrl)
    defer(agent.close)
    const taskIds: string[] = []
    const cancels: string[] = []
    agent.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'cancel') cancels.push(message.task_id)
      if (message.type !== 'task') return
      taskIds.push(message.task_id)
      if (message.payload !== 'long job') agent.send({ type: 'task_response', payload: { task_id: message.task_id, response: { did: message.payload } } })
    })
    agent.send({ type: 'register', payload: { node_id: 'gpu', token: TOKEN, region: 'us-east-1', max_in_flight: 1 } })
    expect((await agent.next('registered')).type).toBe('registered')
    await waitFor(async () => (await inFlight(a, 'gpu')) === 0, "A sees B's agent")

    // A keyed task at A, run in A's request and relayed to B's agent; its caller's operator cancels it.
    const keyed = fetch(`${a.url}/task/request`, {
      method: 'POST',
      headers: { ...TASK_HEADERS, 'idempotency-key': 'long-1' },
      body: JSON.stringify({ region: 'us-east-1', payload: 'long job' }),
    })
    keyed.catch(() => undefined)
    await waitFor(() => taskIds.length === 1, 'the long job at the agent')
    const cancelled = await fetch(`${a.url}/task/${taskIds[0]}`, { method: 'DELETE', headers: TASK_HEADERS })
    expect((await cancelled.json()).state).toBe('cancelled')
    await waitFor(() => cancels.length === 1, 'the agent told of the cancel')
    await keyed

    // The agent dropped the job: its one slot is free, at its holder too, and the next task runs now.
    await Bun.sleep(500)
    const next = await postTask(b.url, { region: 'us-east-1', payload: 'next job' })
    expect({ heldAtB: await inFlight(b, 'gpu'), next: [next.status, next.text] }).toEqual({ heldAtB: 0, next: [200, '{"did":"next job"}'] })
  }, 40_000)
})
