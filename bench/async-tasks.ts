/**
 * Async tasks against sync ones, alone and in a cluster, in one run (issue 14's bench):
 * - submit rate: wrk POSTing `"mode":"async"` (202s per second) beside wrk POSTing the same task
 *   sync (answers per second), same connections and body;
 * - submit-to-done latency: one client, C tasks at a time, each submitted async and fetched with
 *   `GET /task/{id}/result?wait=30`, against the same client running the task sync.
 * Alone: one instance with one WebSocket agent (tasks in memory). Cluster: instances A and B on one
 * redis-server, the agent on A, tasks submitted at A (tasks, queue and results in Redis). Rounds
 * interleave every path; medians of the rounds, ratios as medians of per-round ratios.
 *
 *   bun bench/async-tasks.ts [rounds] [seconds] [connections]
 */

import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startRedis, startWsAgent } from './cluster.ts'
import { WS_REGION } from './http-path.ts'
import { BENCH_TOKEN, type MoonlightProcess, startMoonlight } from './lib/moonlight.ts'
import type { Child } from './lib/proc.ts'
import { median } from './lib/stats.ts'
import { BODY, wrk } from './lib/wrk.ts'

const [roundsText = '3', secondsText = '5', connectionsText = '64'] = process.argv.slice(2)
const rounds = Number(roundsText)
const seconds = Number(secondsText)
const connections = Number(connectionsText)
const HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` }
const SYNC_BODY = BODY(WS_REGION)
const ASYNC_BODY = JSON.stringify({ ...JSON.parse(SYNC_BODY), mode: 'async' })
// Room for every task a few seconds of wrk submits: the bound is not what is measured.
const TASKS = { tasks: { max_results: 2_000_000, concurrency: 1000 } }

const children: Child[] = []
const dir = mkdtempSync(join(tmpdir(), 'mls-bench-async-'))
try {
  const redis = await startRedis()
  children.push(redis.child)
  const alone = await startMoonlight(dir, { name: 'alone', config: TASKS })
  const a = await startMoonlight(dir, { name: 'a', config: { ...TASKS, cluster: { redis_url: redis.url, instance_id: 'a', key_prefix: 'bench-async:' } } })
  const b = await startMoonlight(dir, { name: 'b', config: { ...TASKS, cluster: { redis_url: redis.url, instance_id: 'b', key_prefix: 'bench-async:' } } })
  children.push(alone, a, b)
  for (const [server, prefix] of [
    [alone, 'alone'],
    [a, 'a'],
  ] as const) {
    const agent = startWsAgent(server, WS_REGION, prefix)
    children.push(agent)
    await agent.waitFor(/registered 1 in/)
  }
  const setups = { alone, cluster: a } as const
  type Row = { submitRps: number; syncRps: number; asyncP50: number; asyncP99: number; syncP50: number; syncP99: number }
  const runs: Record<keyof typeof setups, Row[]> = { alone: [], cluster: [] }
  for (let round = 1; round <= rounds; round++) {
    for (const [name, server] of Object.entries(setups) as Array<[keyof typeof setups, MoonlightProcess]>) {
      const sync = await wrk({ url: `${server.url}/task/request`, body: SYNC_BODY }, connections, seconds)
      const submitted = await wrk({ url: `${server.url}/task/request`, body: ASYNC_BODY }, connections, seconds)
      if (submitted.non_2xx > 0 || sync.non_2xx > 0) throw new Error(`${name}: errors (sync ${sync.non_2xx}, async ${submitted.non_2xx})`)
      // Let the queue that wrk filled drain before timing single tasks.
      await drain(server)
      const asyncLatency = await latencies(server, true)
      const syncLatency = await latencies(server, false)
      const row: Row = {
        submitRps: submitted.requests / (submitted.duration_us / 1e6),
        syncRps: sync.requests / (sync.duration_us / 1e6),
        asyncP50: percentile(asyncLatency, 0.5),
        asyncP99: percentile(asyncLatency, 0.99),
        syncP50: percentile(syncLatency, 0.5),
        syncP99: percentile(syncLatency, 0.99),
      }
      runs[name].push(row)
      console.log(
        `round ${round} ${name.padEnd(7)} async submits ${row.submitRps.toFixed(0)}/s, sync ${row.syncRps.toFixed(0)}/s; submit-to-done p50 ${row.asyncP50.toFixed(2)} ms p99 ${row.asyncP99.toFixed(2)} ms, sync p50 ${row.syncP50.toFixed(2)} ms p99 ${row.syncP99.toFixed(2)} ms`,
      )
    }
  }
  console.log(`\n| setup | async submits / s | sync tasks / s | submits / sync | submit-to-done p50 | sync p50 | × | submit-to-done p99 | sync p99 | × |`)
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  for (const [name, rows] of Object.entries(runs)) {
    const m = (pick: (row: Row) => number) => median(rows.map(pick))
    console.log(
      `| ${name} | ${m((r) => r.submitRps).toFixed(0)} | ${m((r) => r.syncRps).toFixed(0)} | ${m((r) => r.submitRps / r.syncRps).toFixed(2)} | ${m((r) => r.asyncP50).toFixed(2)} ms | ${m((r) => r.syncP50).toFixed(2)} ms | ${m((r) => r.asyncP50 / r.syncP50).toFixed(2)} | ${m((r) => r.asyncP99).toFixed(2)} ms | ${m((r) => r.syncP99).toFixed(2)} ms | ${m((r) => r.asyncP99 / r.syncP99).toFixed(2)} |`,
    )
  }
  console.log(`\n${rounds} rounds × ${seconds} s, wrk -t1 -c${connections}; latencies from 16 tasks at a time for ${seconds} s per path.`)
} finally {
  await Promise.all(children.reverse().map((child) => child.stop()))
}

/** Until the server's queue is empty (its /metrics say so), at most 60 s. */
async function drain(server: MoonlightProcess): Promise<void> {
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    const metrics = await (await fetch(`${server.url}/metrics`)).text()
    if (/moonlight_async_tasks\{state="queued"\} 0\n/.test(metrics) && /moonlight_async_tasks\{state="running"\} 0\n/.test(metrics)) return
    await Bun.sleep(100)
  }
  throw new Error('the async queue did not drain within 60 s')
}

/** Milliseconds per task for `seconds`, 16 at a time: submitted async and fetched, or run sync. */
async function latencies(server: MoonlightProcess, async: boolean): Promise<number[]> {
  const times: number[] = []
  const until = performance.now() + seconds * 1000
  const worker = async () => {
    while (performance.now() < until) {
      const started = performance.now()
      const response = await fetch(`${server.url}/task/request`, { method: 'POST', headers: HEADERS, body: async ? ASYNC_BODY : SYNC_BODY })
      const text = await response.text()
      if (async) {
        const { task_id } = JSON.parse(text) as { task_id: string }
        const result = await fetch(`${server.url}/task/${task_id}/result?wait=30`, { headers: HEADERS })
        await result.arrayBuffer()
        if (result.status !== 200) throw new Error(`async result: ${result.status}`)
      } else if (response.status !== 200) throw new Error(`sync: ${response.status}`)
      times.push(performance.now() - started)
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  return times
}

function percentile(values: number[], quantile: number): number {
  const sorted = [...values].sort((x, y) => x - y)
  return sorted[Math.min(sorted.length - 1, Math.floor(quantile * sorted.length))] ?? 0
}
