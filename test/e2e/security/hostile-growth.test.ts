/**
 * Unbounded growth of the server's memory from values callers, agents and peers choose (a hostile
 * pass): each test sends a little more than the bound of distinct values through the real server and
 * reads what it exposes (/metrics), to the exact count. The region-name tests failed before their fix
 * (a series per region ever roamed to); the last ones guard bounds that held.
 */
import { describe, expect, test } from 'bun:test'
import { MAX_UNNAMED_REGION_SERIES } from '../../../src/observe/region-labels.ts'
import { MAX_TRACKED_ADDRESSES } from '../../../src/security/auth-failures.ts'
import { POOLS_KEPT_IDLE_WITHIN } from '../../../src/tasks/retry-budget.ts'
import { metricSample, postTask, startWsAgent, type TaskResult, type TestServer, TOKEN, testScope, type WsAgent } from '../../support/helpers.ts'

const { server } = testScope()

/** Regions past the bound: enough to show they share one series, few enough to be quick. */
const BEYOND = 200
/** Agents roaming at once. */
const ROAMERS = 50
/** A region of mls.json.example's hierarchy: always labelled, however many others there are. */
const NAMED_REGION = 'us-east-1'
const OTHER = '(other)'

/** The samples of `metric` in a /metrics text, summed by the value of their `label` (over their other labels). */
function sumsBy(text: string, metric: string, label: string): Map<string, number> {
  const sums = new Map<string, number>()
  const pattern = new RegExp(`^${metric}\\{[^}]*\\b${label}="([^"]*)"[^}]*\\} (\\S+)$`, 'gm')
  for (const match of text.matchAll(pattern)) sums.set(match[1]!, (sums.get(match[1]!) ?? 0) + Number(match[2]))
  return sums
}

/** Requests a flood has in flight at once. */
const AT_ONCE = 64

/** Runs `send(0)` … `send(count - 1)`, AT_ONCE at a time. */
async function flood(count: number, send: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: AT_ONCE }, async () => {
      while (next < count) await send(next++)
    }),
  )
}

/** Registers `agent` again on its own socket, in `region`: the same node, moved. */
async function moveTo(agent: WsAgent, region: string): Promise<void> {
  agent.send({ type: 'register', payload: { ip: '127.0.0.1', node_id: agent.nodeId, token: TOKEN, region, port: 3000 } })
  const answer = await agent.next('registered')
  expect(answer.payload.region).toBe(region)
}

/**
 * Moves the agents through `regions` in order, as many at a time as there are agents, and sends one
 * task to each region while its agent is registered there; `answered` checks each task's answer.
 */
async function roam(mls: TestServer, agents: WsAgent[], regions: string[], answered: (answer: TaskResult) => void): Promise<void> {
  for (let first = 0; first < regions.length; first += agents.length) {
    await Promise.all(
      regions.slice(first, first + agents.length).map(async (region, i) => {
        await moveTo(agents[i]!, region)
        answered(await postTask(mls.url, { region, payload: { region } }))
      }),
    )
  }
}

/**
 * Roams through `count` made-up regions (no hierarchy has them), the first MAX_UNNAMED_REGION_SERIES
 * of them before any other (so those are the ones with series of their own), then into the
 * hierarchy's NAMED_REGION: the made-up regions, in the order roamed.
 */
async function roamPastTheBound(mls: TestServer, agents: WsAgent[], prefix: string, count: number, answered: (answer: TaskResult) => void) {
  const regions = Array.from({ length: count }, (_, i) => `${prefix}-${i}`)
  await roam(mls, agents, regions.slice(0, MAX_UNNAMED_REGION_SERIES), answered)
  await roam(mls, agents, regions.slice(MAX_UNNAMED_REGION_SERIES), answered)
  await roam(mls, agents.slice(0, 1), [NAMED_REGION], answered)
  return regions
}

/**
 * The series of one metric by region, after `roamPastTheBound`: the hierarchy's region, the first
 * MAX_UNNAMED_REGION_SERIES made-up ones with one task each, and the rest in (other) with the
 * `unheld` tasks of regions no client was in.
 */
function expectBoundedSeries(series: Map<string, number>, regions: string[], unheld = 0): void {
  const own = regions.slice(0, MAX_UNNAMED_REGION_SERIES)
  expect(series.size).toBe(1 + MAX_UNNAMED_REGION_SERIES + 1)
  expect(own.filter((region) => series.get(region) !== 1)).toEqual([])
  expect(series.get(NAMED_REGION)).toBe(1)
  expect(series.get(OTHER)).toBe(regions.length - MAX_UNNAMED_REGION_SERIES + unheld)
}

describe('region names agents roam through', () => {
  test(`do not each leave a series of moonlight_task_duration_seconds behind (${MAX_UNNAMED_REGION_SERIES} + ${BEYOND} regions)`, async () => {
    const mls = server()
    const agents = await Promise.all(Array.from({ length: ROAMERS }, (_, i) => startWsAgent(mls.wsUrl, { nodeId: `roamer-${i}`, region: `start-${i}` })))
    // A made-up region no client holds: (other) from the first, while there is room for held ones.
    expect((await postTask(mls.url, { region: 'nobody-here', payload: 1, fallback: 'none' })).status).toBe(503)
    const regions = await roamPastTheBound(mls, agents, 'roam', MAX_UNNAMED_REGION_SERIES + BEYOND, (answer) => expect(answer.status).toBe(200))
    // Before: one series per region ever roamed to, and /metrics itself failed (500) past about 6 000 of them.
    const metrics = await fetch(`${mls.url}/metrics`)
    expect(metrics.status).toBe(200)
    const series = sumsBy(await metrics.text(), 'moonlight_task_duration_seconds_count', 'region')
    // docs/security.md: past the bound, regions the hierarchy does not name share `(other)`; nobody-here's task is there too.
    expectBoundedSeries(series, regions, 1)
  })

  test(`do not each leave a series of moonlight_retries_refused_total behind (past ${MAX_UNNAMED_REGION_SERIES} regions and ${POOLS_KEPT_IDLE_WITHIN} idle pools)`, async () => {
    // Every retry after a 5xx refused, and agents never ejected: each task in each region is one refusal.
    const mls = server({ routing: { retry_budget: { percent: 0, min: 0 } }, health: { failures_to_eject: 1_000_000_000 } })
    const agents = await Promise.all(
      Array.from({ length: ROAMERS }, (_, i) =>
        startWsAgent(mls.wsUrl, { nodeId: `failing-${i}`, region: `start-${i}`, answer: () => ({ response: { error: 'down' }, status: 500 }) }),
      ),
    )
    // Past both bounds: the retry budget forgets idle pools past POOLS_KEPT_IDLE_WITHIN, yet every refusal is counted.
    const count = Math.max(MAX_UNNAMED_REGION_SERIES, POOLS_KEPT_IDLE_WITHIN) + BEYOND
    const regions = await roamPastTheBound(mls, agents, 'fail', count, (answer) => expect(answer.json().reason).toBe('retry_budget_exhausted'))
    const metrics = await fetch(`${mls.url}/metrics`)
    expect(metrics.status).toBe(200)
    expectBoundedSeries(sumsBy(await metrics.text(), 'moonlight_retries_refused_total', 'pool'), regions)
  })
})

describe('values callers choose, held within their documented bounds (docs/security.md)', () => {
  test(`failed authentications from ${MAX_TRACKED_ADDRESSES} + 1000 forwarded addresses: past those tracked, newcomers share one count`, async () => {
    const maxFailures = 20
    // A window no run outlasts: the first addresses' failures are all still in it at the end.
    const mls = server({ trusted_proxies: ['127.0.0.1/32'], auth: { max_failures: maxFailures, window: 3600 } })
    const addresses = MAX_TRACKED_ADDRESSES + 1000
    await flood(addresses, async (i) => {
      const forwarded = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`
      const answer = await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer wrong-${i}`, 'x-forwarded-for': forwarded } })
      await answer.text()
    })
    expect(await metricSample(mls.url, 'moonlight_auth_failures_total')).toBe(addresses)
    // Each tracked address failed once; the 1000 after them are one count, past its max_failures at once.
    expect(await metricSample(mls.url, 'moonlight_auth_throttled_total')).toBe(addresses - MAX_TRACKED_ADDRESSES - maxFailures)
  })

  test('1000 distinct Idempotency-Keys keep the stored tasks within tasks.max_results', async () => {
    // Room for the flood's tasks in flight (a running task is not evicted: past them, 503 too_many_tasks), and little more.
    const maxResults = 2 * AT_ONCE
    const keys = 1000
    const mls = server({ tasks: { max_results: maxResults } })
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'keyed', region: 'us-east-1' })
    await flood(keys, async (i) => {
      const answer = await fetch(`${mls.url}/task/request`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'idempotency-key': `key-${i}` },
        body: JSON.stringify({ region: 'us-east-1', payload: { i } }),
      })
      expect(answer.status).toBe(200)
      await answer.text()
    })
    expect(agent.received.length).toBe(keys)
    expect(await metricSample(mls.url, 'moonlight_stored_tasks')).toBe(maxResults)
    expect(await metricSample(mls.url, 'moonlight_stored_tasks_evicted_total')).toBe(keys - maxResults)
  })
})
