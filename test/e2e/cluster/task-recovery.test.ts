/**
 * Stored tasks in a cluster when things go wrong: a queue write refused, an instance dying mid-run,
 * results expiring (real Redis, `moonlight serve` instances).
 */

import { describe, expect, test } from 'bun:test'
import { RedisClient } from 'bun'
import { clusterScope } from '../../support/cluster.ts'
import { postJson, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { submitTask, TASK_HEADERS, taskResult } from '../../support/task-calls.ts'

const { defer } = testScope()
const { redisServer, instance } = clusterScope(defer)
const _HEADERS = TASK_HEADERS

const submit = submitTask
const result = taskResult

function redisClient(url: string): RedisClient {
  const client = new RedisClient(url)
  defer(() => client.close())
  return client
}

describe('stored tasks in a cluster, when things go wrong', () => {
  test('an async submission refused 503 (the queue could not be written after the task was stored) leaves no zombie: a retry with its key runs the task', async () => {
    const redis = await redisServer()
    const raw = redisClient(redis.url)
    // An instance whose Redis user may not XADD (for now): a failure between add() (the task hash and the key) and enqueue().
    await raw.send('ACL', ['SETUSER', 'mls', 'on', '>mls-pw', '~*', '&*', '+@all', '-xadd'])
    const a = await instance(redis.url.replace('redis://', 'redis://mls:mls-pw@'), 'a')
    const agent = await startHttpAgent(a.url, { nodeId: 'worker', region: 'us-east-1' })
    defer(agent.stop)
    const body = { region: 'us-east-1', payload: 'job', mode: 'async' }
    const refused = await submit(a.url, body, { 'idempotency-key': 'job-1' })
    expect([refused.response.status, JSON.parse(refused.text).code]).toEqual([503, 'store_unavailable'])
    const leftover = (await raw.send('KEYS', ['mls:task:*'])) as string[]
    const ttls = await Promise.all(leftover.map((key) => raw.send('PTTL', [key])))
    await raw.send('ACL', ['SETUSER', 'mls', '+xadd'])

    const retry = await submit(a.url, body, { 'idempotency-key': 'job-1' })
    const taskId = JSON.parse(retry.text).task_id
    const done = await result(a.url, taskId, 5)
    // The refused submission stored nothing (no task without a TTL, nor a key), so the retry is a new
    // task, queued, and it runs.
    const withoutTtl = ttls.filter((ttl) => ttl === -1).length
    expect({ replayed: retry.response.headers.get('idempotent-replayed'), status: done.response.status, ran: agent.received, withoutTtl }).toEqual({
      replayed: null,
      status: 200,
      ran: ['job'],
      withoutTtl: 0,
    })
  }, 30_000)

  test('a keyed sync task whose instance died mid-run: a retry at another instance gets an answer, not 202 for idempotency_ttl', async () => {
    const redis = await redisServer()
    const config = { task_timeout: 2, tasks: { claim_margin: 1 } }
    const a = await instance(redis.url, 'a', config)
    let calls = 0
    const agent = await startHttpAgent(a.url, {
      nodeId: 'worker',
      region: 'us-east-1',
      work: async (payload) => {
        calls++
        if (calls === 1) await Bun.sleep(1500)
        return Response.json({ did: payload })
      },
    })
    defer(agent.stop)
    const body = { region: 'us-east-1', payload: 'pay' }
    const first = submit(a.url, body, { 'idempotency-key': 'pay-1' }).catch(() => undefined)
    await waitFor(() => calls === 1, 'A sent the task to the agent')
    a.child.process.kill('SIGKILL')
    await a.child.exited
    await first
    const b = await instance(redis.url, 'b', config)
    const heartbeatAtB = () =>
      postJson(`${b.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'worker', token: TOKEN, region: 'us-east-1', port: agent.port })
    await waitFor(async () => (await heartbeatAtB()).status === 200, 'the agent registered at B', 10_000)
    // Well past task_timeout + claim_margin: the first run is long over, yet its record still says "running".
    await Bun.sleep(3000)
    const retry = await submit(b.url, body, { 'idempotency-key': 'pay-1' })
    // The retry takes the orphaned run over (as an async claim would be) and answers, rather than a 202
    // {"state":"running"} to a sync request for idempotency_ttl (24 h).
    expect([retry.response.status, JSON.parse(retry.text).state]).toEqual([200, undefined])
  }, 40_000)

  test('eviction past tasks.max_results in Redis: the evicted tasks are gone, counted, and their idempotency keys freed', async () => {
    const redis = await redisServer()
    const raw = redisClient(redis.url)
    const a = await instance(redis.url, 'a', { tasks: { max_results: 2 } })
    const agent = await startHttpAgent(a.url, { nodeId: 'worker', region: 'us-east-1' })
    defer(agent.stop)
    const taskIds: string[] = []
    for (let n = 1; n <= 6; n++) {
      const answer = await submit(a.url, { region: 'us-east-1', payload: n }, { 'idempotency-key': `job-${n}` })
      expect([answer.response.status, answer.text]).toEqual([200, answer.text])
      taskIds.push(answer.response.headers.get('x-task-id')!)
    }
    // Two tasks are kept (max_results): the four evicted are gone at once, not at the end of result_ttl, and each is counted.
    const stored = ((await raw.send('KEYS', ['mls:task:*'])) as string[]).map((key) => key.replace('mls:task:', '')).sort()
    expect(stored).toEqual(taskIds.slice(4).sort())
    expect((await fetch(`${a.url}/task/${taskIds[0]}`, { headers: TASK_HEADERS })).status).toBe(404)
    const metrics = await (await fetch(`${a.url}/metrics`)).text()
    expect(metrics.split('\n').find((line) => line.startsWith('moonlight_stored_tasks_evicted_total '))).toBe('moonlight_stored_tasks_evicted_total 4')
    // And so are their keys: two are held, not six until idempotency_ttl (24 h).
    const held = ((await raw.send('KEYS', ['mls:idem:*'])) as string[]).map((key) => key.replace(/^.*:/, '')).sort()
    expect(held).toEqual(['job-5', 'job-6'])
    // A key an evicted task held is free again: the same request runs anew.
    const again = await submit(a.url, { region: 'us-east-1', payload: 1 }, { 'idempotency-key': 'job-1' })
    expect([again.response.status, again.response.headers.get('x-moonlight-node')]).toEqual([200, 'worker'])
  }, 30_000)

  test('/metrics: a task that merely expired (result_ttl) is neither counted as evicted nor as stored', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { tasks: { result_ttl: 0.5, max_results: 2 } })
    const agent = await startHttpAgent(a.url, { nodeId: 'worker', region: 'us-east-1' })
    defer(agent.stop)
    for (const payload of [1, 2]) {
      const { task_id } = JSON.parse((await submit(a.url, { region: 'us-east-1', payload, mode: 'async' })).text)
      expect((await result(a.url, task_id, 5)).response.status).toBe(200)
    }
    await Bun.sleep(1000)
    const { task_id } = JSON.parse((await submit(a.url, { region: 'us-east-1', payload: 3, mode: 'async' })).text)
    expect((await result(a.url, task_id, 5)).response.status).toBe(200)
    const metrics = await (await fetch(`${a.url}/metrics`)).text()
    const figure = (name: string) => metrics.split('\n').find((line) => line.startsWith(`${name} `))
    // The two expired tasks are neither "stored" nor "evicted": expiring is not eviction.
    expect([figure('moonlight_stored_tasks'), figure('moonlight_stored_tasks_evicted_total')]).toEqual([
      'moonlight_stored_tasks 1',
      'moonlight_stored_tasks_evicted_total 0',
    ])
  }, 30_000)
})
