/**
 * Unbounded growth of the server's memory from values callers, agents and peers choose (a hostile
 * pass): each test sends tens of thousands of distinct values through the real server and reads what
 * it exposes (/metrics). The region-name tests failed before their fix; the last ones guard bounds
 * that held.
 */
import { describe, expect, test } from 'bun:test'
import { postTask, startWsAgent, TOKEN, testScope, type WsAgent } from '../../support/helpers.ts'

const { server } = testScope()

/** The distinct values of `label` among the samples of `metric` in /metrics. */
function labelValues(text: string, metric: string, label: string): Set<string> {
  const values = new Set<string>()
  const pattern = new RegExp(`^${metric}\\{[^}]*\\b${label}="([^"]*)"`, 'gm')
  for (const match of text.matchAll(pattern)) values.add(match[1]!)
  return values
}

/** Runs `send(0)` … `send(count - 1)`, 64 at a time. */
async function flood(count: number, send: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < count) await send(next++)
    }),
  )
}

/** One sample of /metrics. */
async function sample(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1])
}

/** Registers `agent` again on its own socket, in `region`: the same node, moved. */
async function moveTo(agent: WsAgent, region: string): Promise<void> {
  agent.send({ type: 'register', payload: { ip: '127.0.0.1', node_id: agent.nodeId, token: TOKEN, region, port: 3000 } })
  const answer = await agent.next('registered')
  expect(answer.payload.region).toBe(region)
}

describe('region names agents roam through', () => {
  test('do not each leave a series of moonlight_task_duration_seconds behind (50 000 regions)', async () => {
    const mls = server()
    const agents = await Promise.all(Array.from({ length: 50 }, (_, i) => startWsAgent(mls.wsUrl, { nodeId: `roamer-${i}`, region: `start-${i}` })))
    const rounds = 1000
    for (let round = 0; round < rounds; round++) {
      await Promise.all(
        agents.map(async (agent, i) => {
          const region = `r${round}-${i}`
          await moveTo(agent, region)
          const answer = await postTask(mls.url, { region, payload: { round } })
          expect(answer.status).toBe(200)
        }),
      )
    }
    // Before: one series per region ever roamed to, and /metrics itself failed (500) past about 6 000 of them.
    const metrics = await fetch(`${mls.url}/metrics`)
    expect(metrics.status).toBe(200)
    const regions = labelValues(await metrics.text(), 'moonlight_task_duration_seconds_count', 'region')
    expect(regions.has('(other)')).toBe(true)
    // Past 1 000 regions the hierarchy does not name (docs/security.md), the rest share `(other)`.
    expect(regions.size).toBeLessThanOrEqual(1001)
  }, 60_000)

  test('do not each leave a series of moonlight_retries_refused_total behind (50 000 regions)', async () => {
    // Every retry after a 5xx refused, and agents never ejected: each task in each region is one refusal.
    const mls = server({ routing: { retry_budget: { percent: 0, min: 0 } }, health: { failures_to_eject: 1_000_000_000 } })
    const agents = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        startWsAgent(mls.wsUrl, { nodeId: `failing-${i}`, region: `start-${i}`, answer: () => ({ response: { error: 'down' }, status: 500 }) }),
      ),
    )
    for (let round = 0; round < 1000; round++) {
      await Promise.all(
        agents.map(async (agent, i) => {
          const region = `f${round}-${i}`
          await moveTo(agent, region)
          const answer = await postTask(mls.url, { region, payload: { round } })
          expect(answer.json().reason).toBe('retry_budget_exhausted')
        }),
      )
    }
    const metrics = await fetch(`${mls.url}/metrics`)
    expect(metrics.status).toBe(200)
    const text = await metrics.text()
    const pools = labelValues(text, 'moonlight_retries_refused_total', 'pool')
    // Past 1 000 pools the hierarchy does not name (docs/security.md), the rest share `(other)`; every refusal is still counted.
    expect(pools.has('(other)')).toBe(true)
    expect(pools.size).toBeLessThanOrEqual(1001)
    let refused = 0
    for (const match of text.matchAll(/^moonlight_retries_refused_total\{[^}]*\} (\d+)$/gm)) refused += Number(match[1])
    expect(refused).toBe(50_000)
  }, 60_000)
})

describe('values callers choose, held within their documented bounds (docs/security.md)', () => {
  test('failed authentications from 50 000 forwarded addresses: past 10 000 tracked, newcomers share one count', async () => {
    const mls = server({ trusted_proxies: ['127.0.0.1/32'], auth: { max_failures: 20 } })
    await flood(50_000, async (i) => {
      const forwarded = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`
      const answer = await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer wrong-${i}`, 'x-forwarded-for': forwarded } })
      await answer.text()
    })
    expect(await sample(mls.url, 'moonlight_auth_failures_total')).toBe(50_000)
    // Each of the first 10 000 addresses failed once; the 40 000 after them are one count, past its 20 at once.
    expect(await sample(mls.url, 'moonlight_auth_throttled_total')).toBe(40_000 - 20)
  }, 60_000)

  test('50 000 distinct Idempotency-Keys keep the stored tasks within tasks.max_results', async () => {
    const mls = server({ tasks: { max_results: 100 } })
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'keyed', region: 'us-east-1' })
    await flood(50_000, async (i) => {
      const answer = await fetch(`${mls.url}/task/request`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'idempotency-key': `key-${i}` },
        body: JSON.stringify({ region: 'us-east-1', payload: { i } }),
      })
      expect(answer.status).toBe(200)
      await answer.text()
    })
    expect(agent.received.length).toBe(50_000)
    expect(await sample(mls.url, 'moonlight_stored_tasks')).toBe(100)
    expect(await sample(mls.url, 'moonlight_stored_tasks_evicted_total')).toBe(50_000 - 100)
  }, 60_000)
})
