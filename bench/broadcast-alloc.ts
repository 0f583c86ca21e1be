/**
 * JS cells a broadcast to A WebSocket agents allocates in the server, by JavaScriptCore type: the
 * server preloaded with lib/alloc-probe.ts and run with BUN_JSC_useGC=false (nothing is collected,
 * so the difference of two readings is what was allocated), W warm-up broadcasts, then N counted.
 * Exact and independent of load: no lock needed. `--root DIR` measures another checkout (for an
 * A/B, unpack a commit with `git archive REF src package.json tsconfig.json | tar -x -C DIR` and
 * link node_modules into it).
 *
 *   bun bench/broadcast-alloc.ts [--agents 1000] [--broadcasts 20] [--root DIR]
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BENCH_TOKEN, startMoonlight } from './lib/moonlight.ts'
import type { Child } from './lib/proc.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

const { values } = parseArgs({
  options: { agents: { type: 'string', default: '1000' }, broadcasts: { type: 'string', default: '20' }, root: { type: 'string' } },
})
const A = Number(values.agents)
const N = Number(values.broadcasts)
const WARM_UP = 10
const REGION = 'ap-southeast-1'
const dir = mkdtempSync(join(tmpdir(), 'mls-bcast-alloc-'))
const moonlight = await startMoonlight(dir, {
  bunArgs: ['--preload', join(import.meta.dir, 'lib', 'alloc-probe.ts')],
  env: { BUN_JSC_useGC: 'false' },
  root: values.root,
})
const children: Child[] = [moonlight]
try {
  const probePort = Number((await moonlight.waitFor(/alloc probe on port (\d+)/))[1])
  const read = async () => ((await (await fetch(`http://127.0.0.1:${probePort}/counts`)).json()) as { counts: Record<string, number> }).counts
  for (let at = 0; at < A; at += 250)
    children.push(spawnWsAgents(`agents-${at}`, moonlight.wsUrl, { count: Math.min(250, A - at), region: REGION, prefix: `a${at}-` }))
  await Promise.all(children.slice(1).map((child) => child.waitFor(/registered \d+ in/, 60_000)))
  const body = JSON.stringify({ region: REGION, mode: 'broadcast', payload: { job: 'refresh-cache', key: 'config' } })
  const broadcast = async () => {
    const response = await fetch(`${moonlight.url}/task/request`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
      body,
    })
    const answer = (await response.json()) as { answered: number }
    if (answer.answered !== A) throw new Error(`answered ${answer.answered} of ${A}`)
  }
  for (let i = 0; i < WARM_UP; i++) await broadcast()
  const before = await read()
  for (let i = 0; i < N; i++) await broadcast()
  const after = await read()
  // The probe's own reply is in the second reading: a few cells, negligible over N broadcasts.
  const rows = Object.keys(after)
    .map((type) => [type, ((after[type] ?? 0) - (before[type] ?? 0)) / N] as const)
    .filter(([, perBroadcast]) => perBroadcast >= 1)
    .sort((a, b) => b[1] - a[1])
  const total = rows.reduce((sum, [, n]) => sum + n, 0)
  console.log(`cells per broadcast to ${A} agents (${N} broadcasts after ${WARM_UP}): ${total.toFixed(0)} in all, ${(total / A).toFixed(1)} per agent`)
  for (const [type, perBroadcast] of rows) console.log(`  ${perBroadcast.toFixed(0).padStart(8)}  ${(perBroadcast / A).toFixed(2).padStart(6)}/agent  ${type}`)
} finally {
  await Promise.all(children.reverse().map((child) => child.stop()))
}
