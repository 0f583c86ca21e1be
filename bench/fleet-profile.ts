/**
 * What idle WebSocket agents hold and where a broadcast's time goes, in one Moonlight process
 * (preloaded with lib/alloc-probe.ts, run under `bun --cpu-prof`):
 * 1. JS heap cells by type and heap bytes per agent, after a full collection, and RSS per agent,
 *    from 0 to B broadcast agents (region ap-southeast-1), then to T agents in all;
 * 2. R broadcasts to the B agents, timed; the CPU profile's samples of that window only (the last
 *    phase before the stop), the top functions by self time.
 *
 *   bun bench/fleet-profile.ts [B=1000] [T=5000] [R=30]
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BENCH_TOKEN, startMoonlight } from './lib/moonlight.ts'
import { type Child, rssBytes } from './lib/proc.ts'
import { median } from './lib/stats.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

const B = Number(process.argv[2] ?? 1000)
const T = Number(process.argv[3] ?? 5000)
const R = Number(process.argv[4] ?? 30)
const PER_PROCESS = 1000
const REGION = 'ap-southeast-1'
const dir = mkdtempSync(join(tmpdir(), 'mls-fleet-'))
const profileDir = join(dir, 'prof')
const moonlight = await startMoonlight(dir, {
  bunArgs: ['--preload', join(import.meta.dir, 'lib', 'alloc-probe.ts'), '--cpu-prof', `--cpu-prof-dir=${profileDir}`, '--cpu-prof-interval=200'],
})
const children: Child[] = [moonlight]
const probePort = Number((await moonlight.waitFor(/alloc probe on port (\d+)/))[1])
interface Reading {
  counts: Record<string, number>
  heap_bytes: number
}
const read = async () => (await (await fetch(`http://127.0.0.1:${probePort}/counts?gc=1`)).json()) as Reading
const report = (label: string, from: Reading, to: Reading, n: number, rssFrom: number, rssTo: number) => {
  console.log(`\n${label}: ${n} agents; heap ${((to.heap_bytes - from.heap_bytes) / n).toFixed(0)} B/agent, RSS ${((rssTo - rssFrom) / n).toFixed(0)} B/agent`)
  const rows = Object.keys(to.counts)
    .map((type) => [type, ((to.counts[type] ?? 0) - (from.counts[type] ?? 0)) / n] as const)
    .filter(([, v]) => Math.abs(v) >= 0.05)
    .sort((a, b) => b[1] - a[1])
  for (const [type, perAgent] of rows.slice(0, 20)) console.log(`  ${perAgent.toFixed(2).padStart(8)}  ${type}`)
}
async function addAgents(count: number, region: string, prefix: string): Promise<void> {
  const started: Child[] = []
  for (let offset = 0; offset < count; offset += PER_PROCESS) {
    const agent = spawnWsAgents(`${prefix}-${offset}`, moonlight.wsUrl, { count: Math.min(PER_PROCESS, count - offset), region, prefix: `${prefix}-${offset}` })
    started.push(agent)
    children.push(agent)
  }
  await Promise.all(started.map((agent) => agent.waitFor(/registered \d+ in/, 120_000)))
  await Bun.sleep(1000)
}
try {
  await Bun.sleep(500)
  const r0 = await read()
  const rss0 = rssBytes(moonlight.pid)
  await addAgents(B, REGION, 'bcast')
  const r1 = await read()
  const rss1 = rssBytes(moonlight.pid)
  report(`idle, first ${B}`, r0, r1, B, rss0, rss1)
  await addAgents(T - B, 'us-east-1', 'idle')
  const r2 = await read()
  const rss2 = rssBytes(moonlight.pid)
  report(`idle, ${B} → ${T}`, r1, r2, T - B, rss1, rss2)
  report(`idle, all ${T}`, r0, r2, T, rss0, rss2)

  const body = JSON.stringify({ region: REGION, mode: 'broadcast', payload: { job: 'refresh-cache', key: 'config' } })
  const times: number[] = []
  await Bun.sleep(300)
  const phaseStart = performance.now()
  for (let i = 0; i < R; i++) {
    const started = performance.now()
    const response = await fetch(`${moonlight.url}/task/request`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
      body,
    })
    const text = await response.text()
    if (response.status !== 200) throw new Error(`broadcast ${response.status}: ${text.slice(0, 300)}`)
    times.push(performance.now() - started)
  }
  const phaseMs = performance.now() - phaseStart
  const stopAt = performance.now()
  await moonlight.stop()
  const stopMs = performance.now() - stopAt
  const sorted = [...times].sort((a, b) => a - b)
  console.log(
    `\nbroadcast to ${B} (of ${T} connected): median ${median(times).toFixed(1)} ms, min ${sorted[0]!.toFixed(1)}, max ${sorted.at(-1)!.toFixed(1)} (${R} runs, first ones included)`,
  )
  console.log(`per run: ${times.map((t) => t.toFixed(1)).join(' ')}`)
  const file = readdirSync(profileDir).find((name) => name.endsWith('.cpuprofile'))!
  const profile = JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as {
    nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>
    samples: number[]
    timeDeltas: number[]
    endTime: number
  }
  // The samples of the broadcast window: the profile ends at the exit, stopMs after the window ended (give it 100 ms of margin either side, inward).
  let t = (profile as unknown as { startTime: number }).startTime
  const windowEnd = profile.endTime - (stopMs + 100) * 1000
  const windowStart = profile.endTime - (stopMs + phaseMs - 100) * 1000
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const label = (id: number) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame
    return `${functionName || '(anonymous)'} ${url.replace(/^.*\/(node_modules\/|src\/)/, '$1')}:${lineNumber + 1}`
  }
  const self = new Map<string, number>()
  const inclusive = new Map<string, number>()
  let inWindow = 0
  profile.samples.forEach((sample, index) => {
    t += profile.timeDeltas[index]!
    if (t < windowStart || t > windowEnd) return
    inWindow++
    self.set(label(sample), (self.get(label(sample)) ?? 0) + 1)
    const seen = new Set<string>()
    for (let id: number | undefined = sample; id !== undefined; id = parent.get(id)) {
      const name = label(id)
      if (seen.has(name)) continue
      seen.add(name)
      inclusive.set(name, (inclusive.get(name) ?? 0) + 1)
    }
  })
  const per = (n: number) => `${((n * 0.2) / ((R * (phaseMs - 200)) / phaseMs)).toFixed(2).padStart(6)} ms`
  console.log(
    `\nprofile window: ${inWindow} samples (${((inWindow * 0.2) / 1000).toFixed(2)} s of JS thread in ${(phaseMs / 1000).toFixed(2)} s); per broadcast:`,
  )
  console.log('self/broadcast  function')
  for (const [name, count] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${per(count)}  ${name}`)
  console.log('\ninclusive/broadcast')
  for (const [name, count] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${per(count)}  ${name}`)
} finally {
  await Promise.all(children.reverse().map((child) => child.stop()))
}
