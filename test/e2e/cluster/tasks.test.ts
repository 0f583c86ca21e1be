/**
 * Stored tasks in a cluster: async tasks and idempotency keys kept in a real Redis, so any instance
 * answers for any task, and an accepted task survives the instance that claimed it.
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { postJson, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { submitTask, TASK_HEADERS, taskResult } from '../../support/task-calls.ts'

const { defer } = testScope()
const { redisServer, instance } = clusterScope(defer)
const HEADERS = TASK_HEADERS

const submit = submitTask
const result = taskResult

describe('stored tasks in a cluster', () => {
  test('an async task submitted at A is polled, long-polled and fetched at B; an idempotency key used at A is honoured at B', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    let gate: (() => void) | undefined
    const agent = await startHttpAgent(a.url, {
      nodeId: 'worker',
      region: 'us-east-1',
      work: async (payload) => {
        if (payload === 'held') await new Promise<void>((resolve) => (gate = resolve))
        return Response.json({ did: payload }, { headers: { 'x-kind': 'work' } })
      },
    })
    defer(agent.stop)

    const accepted = await submit(a.url, { region: 'us-east-1', payload: 'held', mode: 'async' })
    expect(accepted.response.status).toBe(202)
    const { task_id } = JSON.parse(accepted.text)
    await waitFor(() => gate !== undefined, 'the agent holds the task')
    expect((await getJson(`${b.url}/task/${task_id}`)).state).toBe('running')
    const polled = result(b.url, task_id, 20)
    await Bun.sleep(200)
    gate!()
    const done = await polled
    expect([done.response.status, done.text, done.response.headers.get('x-moonlight-node'), done.response.headers.get('x-task-id')]).toEqual([
      200,
      '{"did":"held"}',
      'worker',
      task_id,
    ])
    expect(await getJson(`${b.url}/task/${task_id}`)).toMatchObject({ state: 'done', node_id: 'worker', response: { did: 'held' } })

    const body = { region: 'us-east-1', payload: 'charge' }
    const first = await submit(a.url, body, { 'idempotency-key': 'pay-1' })
    const replay = await submit(b.url, body, { 'idempotency-key': 'pay-1' })
    expect([first.response.status, replay.response.status, replay.text]).toEqual([200, 200, first.text])
    expect(replay.response.headers.get('idempotent-replayed')).toBe('true')
    const mismatch = await submit(b.url, { ...body, payload: 'other' }, { 'idempotency-key': 'pay-1' })
    expect(mismatch.response.status).toBe(422)
    expect(agent.received).toEqual(['held', 'charge'])

    // One key at A and at B at once: one run, both get its answer.
    gate = undefined
    const [atA, atB] = await Promise.all([
      submit(a.url, { region: 'us-east-1', payload: 'held' }, { 'idempotency-key': 'pay-2' }),
      submit(b.url, { region: 'us-east-1', payload: 'held' }, { 'idempotency-key': 'pay-2' }),
      waitFor(() => gate !== undefined, 'the run of pay-2').then(() => gate!()),
    ])
    expect([atA.response.status, atB.response.status, atA.text, atB.text]).toEqual([200, 200, '{"did":"held"}', '{"did":"held"}'])
    expect([atA, atB].filter((call) => call.response.headers.get('idempotent-replayed') === 'true')).toHaveLength(1)
    expect(agent.received).toEqual(['held', 'charge', 'held'])
    gate = undefined

    // Cancel at B of a task A is running: reported cancelled, and the late answer is dropped.
    const queued = JSON.parse((await submit(a.url, { region: 'us-east-1', payload: 'held', mode: 'async' })).text).task_id
    await waitFor(() => agent.received.length === 4, 'the fourth task at the agent')
    const cancelled = await fetch(`${b.url}/task/${queued}`, { method: 'DELETE', headers: HEADERS })
    expect((await cancelled.json()).state).toBe('cancelled')
    gate!()
    expect((await result(a.url, queued, 5)).response.status).toBe(409)
  }, 30_000)

  test('kill -9 of the instance that claimed 20 queued tasks: all 20 are done by the other, each agent call counted', async () => {
    const redis = await redisServer()
    const cluster = { task_timeout: 2, tasks: { claim_margin: 1 } }
    const a = await instance(redis.url, 'a', cluster)
    // Each call by task id; while `slow`, the agent sits on its tasks until A is long dead.
    const calls = new Map<string, number>()
    let slow = true
    const agent = await startHttpAgent(a.url, {
      nodeId: 'worker',
      region: 'us-east-1',
      work: async (payload, request) => {
        const taskId = request.headers.get('x-task-id') ?? '?'
        calls.set(taskId, (calls.get(taskId) ?? 0) + 1)
        if (slow) await Bun.sleep(1500)
        return Response.json({ did: payload })
      },
    })
    defer(agent.stop)
    const ids: string[] = []
    for (let i = 0; i < 20; i++) ids.push(JSON.parse((await submit(a.url, { region: 'us-east-1', payload: i, mode: 'async' })).text).task_id)
    await waitFor(() => calls.size === 20, 'A sent all 20 to the agent')
    a.child.process.kill('SIGKILL')
    await a.child.exited
    slow = false

    const b = await instance(redis.url, 'b', cluster)
    // The agent finds B (A is gone): heartbeats until B takes it.
    const heartbeatAtB = () =>
      postJson(`${b.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'worker', token: TOKEN, region: 'us-east-1', port: agent.port })
    await waitFor(async () => (await heartbeatAtB()).status === 200, 'the agent registered at B', 10_000)
    const startedAt = Date.now()
    const answers = await Promise.all(ids.map((id) => result(b.url, id, 30)))
    expect(answers.map(({ response }) => response.status)).toEqual(ids.map(() => 200))
    expect(answers.map(({ text }) => JSON.parse(text).did)).toEqual(ids.map((_, i) => i))
    for (const id of ids) expect((await getJson(`${b.url}/task/${id}`)).state).toBe('done')
    // Each task ran at the agent twice: once from A (which died before recording it), once from B.
    // X-Task-ID is the same both times, which is how an agent tells the duplicate.
    expect([...calls.entries()].sort()).toEqual(ids.map((id): [string, number] => [id, 2]).sort())
    console.log(`[cluster] kill -9 of the claimer: B took over and finished the 20 tasks in ${Date.now() - startedAt} ms`)
    const metrics = await (await fetch(`${b.url}/metrics`)).text()
    expect(metrics).toContain('moonlight_async_tasks{state="queued"} 0')
    expect(metrics).toContain('moonlight_async_tasks{state="running"} 0')
  }, 40_000)
})

describe('stored tasks without Redis', () => {
  test('Redis gone: an async submission, a keyed task and a poll get 503 store_unavailable with Retry-After, never a 500 or a hang; sync tasks still run', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const agent = await startHttpAgent(a.url, { nodeId: 'worker', region: 'us-east-1' })
    defer(agent.stop)
    await redis.stop()
    await waitFor(async () => (await getJson(`${a.url}/status`)).cluster === 'degraded', 'A notices Redis is gone')
    const refused = [
      await submit(a.url, { region: 'us-east-1', payload: 1, mode: 'async' }),
      await submit(a.url, { region: 'us-east-1', payload: 2 }, { 'idempotency-key': 'k' }),
      await result(a.url, 'some-task', 0),
    ]
    for (const { response, text } of refused) {
      expect([response.status, response.headers.get('retry-after'), JSON.parse(text).code]).toEqual([503, '1', 'store_unavailable'])
    }
    const sync = await submit(a.url, { region: 'us-east-1', payload: 3 })
    expect(sync.response.status).toBe(200)
    expect(agent.received).toEqual([3])
  }, 20_000)
})
