/**
 * Allocations and retention per task, by JavaScriptCore cell type, for Moonlight's HTTP and
 * WebSocket paths and the text relay (the floor): N sequential tasks (one connection, Bun's fetch
 * as the client) after a warm-up, the proxy preloaded with lib/alloc-probe.ts.
 *
 *   bun bench/alloc.ts [alloc|retain] [N] [targets…]
 *
 * alloc: the proxy runs with BUN_JSC_useGC=false (no collection at all), so the difference of the
 * type counts before and after the run is what one task allocates, by type. Its CPU per task then
 * has no collector in it: set it beside `retain`'s to see what the collector costs.
 * retain: the collector on; readings after a full collection: what stays reachable per task.
 * targets: moonlight-http moonlight-ws text-http text-ws (default: all).
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BENCH_TOKEN } from './lib/moonlight.ts'
import { type Child, cpuTimeUs } from './lib/proc.ts'
import { PATH_TARGETS, type PathTarget, startTarget } from './lib/targets.ts'

const mode = process.argv[2] === 'retain' ? 'retain' : 'alloc'
const N = Number(process.argv[3] ?? 20_000)
const targets = (process.argv.length > 4 ? process.argv.slice(4) : PATH_TARGETS) as PathTarget[]
const WARMUP = 3000
const PROBE = ['--preload', join(import.meta.dir, 'lib', 'alloc-probe.ts')]
const env: Record<string, string> = mode === 'alloc' ? { BUN_JSC_useGC: 'false' } : {}

interface Reading {
  collections: number
  counts: Record<string, number>
  objects: number
  heap_bytes: number
  native_bytes: number
  native_allocations: number
  cpu_us: number
}

const dir = mkdtempSync(join(tmpdir(), 'mls-alloc-'))
const results: Record<string, unknown> = {}
for (const target of targets) {
  const children: Child[] = []
  try {
    const running = await startTarget(target, dir, PROBE, env)
    children.push(...running.children)
    const { url, body } = running
    const pid = running.proxy.pid
    const probeChild = running.proxy
    const probePort = Number((await probeChild.waitFor(/alloc probe on port (\d+)/))[1])
    const read = async (): Promise<Reading> =>
      (await (await fetch(`http://127.0.0.1:${probePort}/counts${mode === 'retain' ? '?gc=1' : ''}`)).json()) as Reading
    const task = async () => {
      const response = await fetch(`${url}/task/request`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
        body,
      })
      const text = await response.text()
      if (response.status !== 200) throw new Error(`${target}: ${response.status} ${text}`)
    }
    for (let i = 0; i < WARMUP; i++) await task()
    const before = await read()
    const cpuBefore = cpuTimeUs(pid)
    const started = performance.now()
    for (let i = 0; i < N; i++) await task()
    const wallUs = (performance.now() - started) * 1000
    const cpuAfter = cpuTimeUs(pid)
    const after = await read()
    const perType: Record<string, number> = {}
    for (const type of new Set([...Object.keys(before.counts), ...Object.keys(after.counts)])) {
      const delta = ((after.counts[type] ?? 0) - (before.counts[type] ?? 0)) / N
      if (Math.abs(delta) >= 0.01) perType[type] = Math.round(delta * 100) / 100
    }
    const sorted = Object.fromEntries(Object.entries(perType).sort((a, b) => b[1] - a[1]))
    const summary = {
      mode,
      tasks: N,
      collections_during_run: after.collections - before.collections,
      cells_per_task: Math.round(((after.objects - before.objects) / N) * 10) / 10,
      heap_bytes_per_task: Math.round((after.heap_bytes - before.heap_bytes) / N),
      native_bytes_per_task: Math.round((after.native_bytes - before.native_bytes) / N),
      native_allocations_per_task: Math.round(((after.native_allocations - before.native_allocations) / N) * 10) / 10,
      cpu_us_per_task_proc: Math.round((cpuAfter - cpuBefore) / N),
      cpu_us_per_task_probe: Math.round((after.cpu_us - before.cpu_us) / N),
      wall_us_per_task: Math.round(wallUs / N),
      by_type: sorted,
    }
    results[target] = summary
    console.log(`\n=== ${target} (${mode}, ${N} tasks)`)
    console.log(JSON.stringify({ ...summary, by_type: undefined }))
    for (const [type, count] of Object.entries(sorted)) console.log(`  ${String(count).padStart(8)}  ${type}`)
  } finally {
    await Promise.all(children.reverse().map((child) => child.stop()))
  }
}
if (process.env.ALLOC_JSON) await Bun.write(process.env.ALLOC_JSON, JSON.stringify(results, null, 2))
