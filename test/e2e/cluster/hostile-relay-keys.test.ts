/**
 * Hostile pass: relay keys across an instance's restart under the same instance_id (real redis-server,
 * `moonlight serve` instances, a real WebSocket agent).
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { postTask, testScope, type WsAgent, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance, wsAgent } = clusterScope(defer)

describe('relay keys', () => {
  test("a caller at an instance restarted under the same instance_id never gets the answer to another caller's task relayed by its previous run", async () => {
    const redis = await redisServer()
    const config = { task_timeout: 30 }
    const a1 = await instance(redis.url, 'a', config)
    const b = await instance(redis.url, 'b', config)
    const late: Array<ReturnType<typeof setTimeout>> = []
    defer(() => late.forEach(clearTimeout))
    // B's agent works long: the task relayed by A's first run is answered after 6 s, the next one after 12 s.
    let calls = 0
    const agent: WsAgent = await wsAgent(b, {
      nodeId: 'worker-b',
      region: 'us-east-1',
      answer: (payload, taskId) => {
        const delayMs = ++calls === 1 ? 6000 : 12_000
        late.push(setTimeout(() => agent.send({ type: 'task_response', payload: { task_id: taskId, response: { answer_to: payload } } }), delayMs))
        return null
      },
    })
    await waitFor(async () => (await getJson(`${a1.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'worker-b'), "A sees B's agent")

    // Caller 1 at A's first run: relayed to B (key a/1), then A dies.
    const first = postTask(a1.url, { region: 'us-east-1', payload: 'secret of caller 1' })
    first.catch(() => undefined)
    await waitFor(() => agent.received.length === 1, 'the first task at the agent')
    a1.child.process.kill('SIGKILL')
    await a1.child.exited

    // A comes back under its id once its presence has expired (instance_ttl 1 s).
    let a2 = await instance(redis.url, 'a', config).catch(() => undefined)
    for (let attempt = 0; attempt < 10 && (a2 === undefined || a2.url === ''); attempt++) {
      await Bun.sleep(300)
      a2 = await instance(redis.url, 'a', config).catch(() => undefined)
    }
    if (!a2) throw new Error('A did not come back')
    await waitFor(
      async () => (await getJson(`${a2!.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'worker-b'),
      "A's new run sees B's agent",
    )
    // Caller 2 at A's new run, relayed to the same agent before the first task's answer comes.
    const second = await postTask(a2.url, { region: 'us-east-1', payload: 'question of caller 2' })
    expect(agent.received).toEqual(['secret of caller 1', 'question of caller 2'])
    // Caller 2 must get the answer to its own task, never caller 1's.
    expect([second.status, second.text]).toEqual([200, '{"answer_to":"question of caller 2"}'])
  }, 40_000)
})
