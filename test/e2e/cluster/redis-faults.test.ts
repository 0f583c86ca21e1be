/**
 * A Redis that hangs, forgets, or may evict: a frozen redis-server (SIGSTOP) must look like a lost
 * one, and settings or a restart that lose async tasks must be said in the log (real redis-server,
 * `moonlight serve` instances).
 */

import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson, type Instance } from '../../support/cluster.ts'
import { startHeldHttpAgent, startHttpAgent, testScope, waitFor } from '../../support/helpers.ts'
import { TASK_HEADERS, taskResult } from '../../support/task-calls.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

/** Longer than any wait below: "answered before the freeze ended" means "did not wait for Redis". */
const FROZEN_FOR_AT_LEAST_MS = 20_000
/** command_timeout (2 s by default), plus a refresh period and a margin for a busy machine. */
const NOTICED_WITHIN_MS = 8000

async function readyz(at: Instance): Promise<{ status: number; body: any }> {
  const response = await fetch(`${at.url}/readyz`, { signal: AbortSignal.timeout(NOTICED_WITHIN_MS) })
  return { status: response.status, body: await response.json() }
}

/** An async submission that must be answered within `withinMs`, whatever Redis does. */
async function submitAsync(at: Instance, payload: unknown, withinMs: number): Promise<{ status: number; body: any }> {
  const response = await fetch(`${at.url}/task/request`, {
    method: 'POST',
    headers: TASK_HEADERS,
    body: JSON.stringify({ region: 'us-east-1', payload, mode: 'async' }),
    signal: AbortSignal.timeout(withinMs),
  })
  return { status: response.status, body: await response.json() }
}

describe('a Redis that hangs (SIGSTOP)', () => {
  test('looks like a lost one: /readyz 503 with the reason, async submits 503 store_unavailable, relayed tasks fail over; SIGCONT heals it', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    await wsAgent(b, { nodeId: 'ws-b', region: 'us-east-1' })
    const httpA = await startHttpAgent(a.url, { nodeId: 'http-a', region: 'us-east-1' })
    defer(httpA.stop)
    const heartbeat = setInterval(() => void httpA.heartbeat().catch(() => undefined), 300)
    defer(() => clearInterval(heartbeat))
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.length === 2, "A sees B's WebSocket agent and its own HTTP agent")
    expect((await readyz(a)).status).toBe(200)

    redis.freeze()
    const thawAt = Date.now() + FROZEN_FOR_AT_LEAST_MS
    // Sync tasks sent at once, half of them relayed to B's agent through the frozen Redis: each is
    // answered (by A's HTTP agent, after the relayed attempt failed over), none waits for the freeze.
    const tasks = await Promise.all(
      [1, 2, 3, 4].map((i) =>
        fetch(`${a.url}/task/request`, {
          method: 'POST',
          headers: TASK_HEADERS,
          body: JSON.stringify({ region: 'us-east-1', payload: i }),
          signal: AbortSignal.timeout(NOTICED_WITHIN_MS),
        }),
      ),
    )
    expect(tasks.map((task) => [task.status, task.headers.get('x-moonlight-node')])).toEqual(Array(4).fill([200, 'http-a']))
    expect(tasks.some((task) => task.headers.get('x-moonlight-attempts') === '2')).toBe(true)

    for (const at of [a, b]) {
      await waitFor(async () => (await readyz(at)).status === 503, `${at.id}'s /readyz to say 503`, NOTICED_WITHIN_MS)
      const { body } = await readyz(at)
      expect(body.code).toBe('not_ready')
      expect(body.reason).toContain('the cluster store (Redis) cannot be reached')
      expect(body.reason).toContain('it did not answer within 2 s (cluster.command_timeout)')
      // /readyz is public: Redis's address is for the log only.
      expect(body.reason).not.toContain(String(redis.port))
    }
    // Degraded now: an async submission is refused at once, not held for the freeze.
    const refused = await submitAsync(a, 'while frozen', NOTICED_WITHIN_MS)
    expect([refused.status, refused.body.code]).toEqual([503, 'store_unavailable'])
    expect(a.child.output()).toContain('did not answer within 2 s')
    expect(Date.now()).toBeLessThan(thawAt)

    redis.thaw()
    for (const at of [a, b]) await waitFor(async () => (await readyz(at)).status === 200, `${at.id}'s /readyz to be 200 again`, 15_000)
    const accepted = await submitAsync(a, 'after the thaw', NOTICED_WITHIN_MS)
    expect(accepted.status).toBe(202)
    expect((await taskResult(b.url, accepted.body.task_id, 10)).response.status).toBe(200)
    // And B's WebSocket agent is reachable from A again.
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.length === 2, "A sees B's agent again", 10_000)
  }, 60_000)
})

describe("Redis's own settings, checked at start and at each reconnection", () => {
  test("--save '' --appendonly no: one warning naming both and the risk (a restart loses every async task)", async () => {
    const redis = await redisServer({ settings: ['--save', '', '--appendonly', 'no'] })
    const a = await instance(redis.url, 'a')
    await a.child.waitForOutput('keeps nothing on disk')
    const line = a.child
      .output()
      .split('\n')
      .find((text) => text.includes('keeps nothing on disk'))
    expect(line).toContain('appendonly no')
    expect(line).toContain('save ""')
    expect(line).toContain('a Redis restart loses every queued and stored async task')
    expect(line).toContain('appendonly yes')
  }, 30_000)

  test('appendonly yes and maxmemory-policy allkeys-lru: no persistence warning, one about eviction', async () => {
    const redis = await redisServer({ settings: ['--save', '', '--appendonly', 'yes', '--maxmemory-policy', 'allkeys-lru'] })
    const a = await instance(redis.url, 'a')
    await a.child.waitForOutput('maxmemory-policy allkeys-lru')
    const line = a.child
      .output()
      .split('\n')
      .find((text) => text.includes('maxmemory-policy allkeys-lru'))
    expect(line).toContain('evict')
    expect(line).toContain('noeviction')
    expect(a.child.output()).not.toContain('keeps nothing on disk')
    expect(a.child.output()).not.toContain('appendonly no')
  }, 30_000)

  test('appendonly yes, save "" and noeviction: nothing to warn about', async () => {
    const redis = await redisServer({ settings: ['--save', '', '--appendonly', 'yes', '--maxmemory-policy', 'noeviction'] })
    const a = await instance(redis.url, 'a')
    await a.child.waitForOutput('cluster: connected to')
    expect(a.child.output()).not.toMatch(/appendonly no|maxmemory-policy|keeps nothing on disk/)
  }, 30_000)
})

describe('a Redis restart', () => {
  test('without persistence: logged as "came back empty", the task running here re-stored (its answer kept), the queued one lost (404)', async () => {
    const redis = await redisServer()
    // One worker: the first task runs (held by its agent), the second waits in Redis's queue.
    const a = await instance(redis.url, 'a', { tasks: { concurrency: 1 } })
    const agent = await startHeldHttpAgent(a.url, { nodeId: 'slow', region: 'us-east-1' })
    const { release } = agent
    defer(agent.stop)
    defer(release)
    const running = await submitAsync(a, 'running', NOTICED_WITHIN_MS)
    await waitFor(() => agent.received.length === 1, 'the first task to reach the agent')
    const queued = await submitAsync(a, 'queued', NOTICED_WITHIN_MS)
    expect([running.status, queued.status]).toEqual([202, 202])

    await redis.restart()
    await a.child.waitForOutput('came back empty', 15_000)
    const line = a.child
      .output()
      .split('\n')
      .find((text) => text.includes('came back empty'))
    expect(line).toContain(`re-stored the 1 task running here (${running.body.task_id})`)
    expect(line).toContain('queued tasks and stored results are lost')
    // The settings are checked again after the reconnection.
    expect(a.child.count('keeps nothing on disk')).toBe(2)

    release()
    const kept = await taskResult(a.url, running.body.task_id, 10)
    expect([kept.response.status, JSON.parse(kept.text)]).toEqual([200, { did: 'running' }])
    const lost = await taskResult(a.url, queued.body.task_id, 0)
    expect([lost.response.status, JSON.parse(lost.text).code]).toEqual([404, 'unknown_task'])
  }, 60_000)

  test('with appendonly yes: not logged as empty, and a stored result survives the restart', async () => {
    const redis = await redisServer({ settings: ['--save', '', '--appendonly', 'yes', '--appendfsync', 'always'] })
    const a = await instance(redis.url, 'a')
    const agent = await startHttpAgent(a.url, { nodeId: 'worker', region: 'us-east-1' })
    defer(agent.stop)
    const accepted = await submitAsync(a, 'kept', NOTICED_WITHIN_MS)
    const before = await taskResult(a.url, accepted.body.task_id, 10)
    expect(before.response.status).toBe(200)
    await redis.restart()
    await waitFor(() => a.child.count('cluster: connected to') === 2, 'A to reconnect', 15_000)
    const after = await taskResult(a.url, accepted.body.task_id, 0)
    expect([after.response.status, after.text]).toEqual([200, before.text])
    expect(a.child.output()).not.toContain('came back empty')
  }, 60_000)
})
