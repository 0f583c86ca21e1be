/**
 * Relay batches end to end (src/cluster/relay.ts): the tasks relayed to one instance during one turn go
 * through Redis as one message, and their answers back as one, only between instances that both read
 * them; an instance with cluster.relay_batch off reads and writes one message per task, as an older
 * version does, and must be sent nothing else.
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson, type Instance } from '../../support/cluster.ts'
import { metricSample, postTask, testScope, type WsAgent, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

/** A counter or gauge of `at`'s /metrics (with its labels, if any). */
const metric = (at: Instance, name: string): Promise<number> => metricSample(at.url, name)

/** Until `at` has read `peer`'s presence (not just heard of it on the fleet channel): only then does it know whether the peer reads batches. */
async function knowsPresence(at: Instance, peer: Instance): Promise<void> {
  await waitFor(
    async () =>
      (await getJson(`${at.url}/cluster`)).instances.some(
        (info: { instance_id: string; advertise_url?: string }) => info.instance_id === peer.id && info.advertise_url !== undefined,
      ),
    `${at.id} to read ${peer.id}'s presence`,
    5000,
  )
}

/** Agents on `at` that hold every task until `count` have come, then answer them all at once (so the holder has many answers in one turn). */
async function heldAgents(at: Instance, count: number, names: string[]): Promise<WsAgent[]> {
  const held: Array<{ agent: WsAgent; taskId: string; payload: unknown }> = []
  const agents: WsAgent[] = []
  for (const nodeId of names) {
    const agent: WsAgent = await wsAgent(at, {
      nodeId,
      region: 'us-east-1',
      answer: (payload, taskId) => {
        held.push({ agent, taskId, payload })
        if (held.length === count)
          for (const task of held.splice(0))
            task.agent.send({ type: 'task_response', payload: { task_id: task.taskId, response: { node: task.agent.nodeId, echo: task.payload } } })
        return null
      },
    })
    agents.push(agent)
  }
  return agents
}

describe('relay batches', () => {
  test('a burst of concurrent tasks relayed from A to B: every caller gets its own answer, body and node, and fewer Redis messages than tasks carry them', async () => {
    const count = 40
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 10 })
    const b = await instance(redis.url, 'b', { task_timeout: 10 })
    await heldAgents(b, count, ['held-1', 'held-2'])
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.length === 2, "A lists B's two agents", 5000)
    await knowsPresence(a, b)

    const results = await Promise.all(Array.from({ length: count }, (_, i) => postTask(a.url, { region: 'usa', payload: { i, text: `task ${i}\nline é` } })))
    results.forEach((result, i) => {
      const node = result.headers.get('x-moonlight-node')
      expect([result.status, result.headers.get('x-moonlight-instance')]).toEqual([200, 'b'])
      expect(['held-1', 'held-2']).toContain(node!)
      expect(result.json()).toEqual({ node, echo: { i, text: `task ${i}\nline é` } })
    })
    expect(await metric(a, 'moonlight_cluster_relays_total')).toBe(count)
    const tasks = await metric(a, 'moonlight_cluster_relay_messages_total{kind="tasks"}')
    const replies = await metric(b, 'moonlight_cluster_relay_messages_total{kind="replies"}')
    console.log(`[relay batches] ${count} relayed tasks went in ${tasks} messages, their answers in ${replies}`)
    expect(tasks).toBeLessThanOrEqual(count)
    // The 40 answers became ready together at B: they share messages.
    expect(replies).toBeLessThan(count)
    expect(await metric(a, 'moonlight_cluster_relays_pending')).toBe(0)
  }, 30_000)

  test('with an instance that does not read batches (relay_batch off, as an older version): one message per task and per answer both ways, all answered', async () => {
    const count = 30
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 5 })
    const old = await instance(redis.url, 'old', { task_timeout: 5, cluster: { relay_batch: false } })
    await heldAgents(old, count, ['on-old'])
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.length === 1, "A lists the old instance's agent", 5000)
    await knowsPresence(a, old)

    // A → old: a batch would be dropped there and its tasks would time out (504).
    const toOld = await Promise.all(Array.from({ length: count }, (_, i) => postTask(a.url, { region: 'usa', payload: i })))
    expect(toOld.map((result) => [result.status, result.headers.get('x-moonlight-node')])).toEqual(Array.from({ length: count }, () => [200, 'on-old']))
    expect(toOld.map((result) => result.json().echo)).toEqual(Array.from({ length: count }, (_, i) => i))
    expect(await metric(a, 'moonlight_cluster_relay_messages_total{kind="tasks"}')).toBe(count)
    expect(await metric(old, 'moonlight_cluster_relay_messages_total{kind="replies"}')).toBe(count)

    // old → A: A answers the old one one message per task, whatever is ready together.
    await heldAgents(a, count, ['on-a'])
    await waitFor(async () => (await getJson(`${old.url}/clients`)).clients.length === 2, "the old instance lists A's agent", 5000)
    const toA = await Promise.all(Array.from({ length: count }, (_, i) => postTask(old.url, { region: 'usa', payload: i, node_id: 'on-a' })))
    expect(toA.map((result) => [result.status, result.headers.get('x-moonlight-node'), result.json().echo])).toEqual(
      Array.from({ length: count }, (_, i) => [200, 'on-a', i]),
    )
    expect(await metric(old, 'moonlight_cluster_relay_messages_total{kind="tasks"}')).toBe(count)
    expect(await metric(a, 'moonlight_cluster_relay_messages_total{kind="replies"}')).toBe(count)
  }, 30_000)

  test('kill -9 of B with batches of tasks relayed to it: every caller at A gets one answer, from an agent on A, once', async () => {
    const count = 30
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { task_timeout: 20 })
    const b = await instance(redis.url, 'b', { task_timeout: 20 })
    // B's agent keeps every task and never answers: B dies with all of them.
    const silent = await wsAgent(b, { nodeId: 'silent', region: 'us-east-1', answer: () => null })
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.length === 1, "A lists B's agent", 5000)
    await knowsPresence(a, b)

    const calls = Array.from({ length: count }, (_, i) => postTask(a.url, { region: 'usa', payload: i }))
    for (const call of calls) call.catch(() => undefined)
    await waitFor(() => silent.received.length === count, `the ${count} tasks at B's agent`, 5000)
    const tasks = await metric(a, 'moonlight_cluster_relay_messages_total{kind="tasks"}')
    console.log(`[relay batches] ${count} tasks relayed to B in ${tasks} messages before B was killed`)
    expect(tasks).toBeLessThan(count)
    const rescuer = await wsAgent(a, { nodeId: 'rescuer', region: 'us-east-1' })
    b.child.process.kill('SIGKILL')
    await b.child.exited

    const answered = await Promise.all(calls)
    answered.forEach((result, i) => {
      expect([result.status, result.headers.get('x-moonlight-node'), result.headers.get('x-moonlight-instance')]).toEqual([200, 'rescuer', 'a'])
      expect(result.json()).toEqual({ node: 'rescuer', echo: i })
    })
    expect([...rescuer.received].sort((x, y) => Number(x) - Number(y))).toEqual(Array.from({ length: count }, (_, i) => i))
    expect(await metric(a, 'moonlight_cluster_relays_pending')).toBe(0)
  }, 30_000)
})
