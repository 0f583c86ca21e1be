/**
 * Where a task's CPU goes by thread: each path (lib/targets.ts) under `wrk -cC` for S seconds,
 * the proxy's CPU per task read from /proc/PID/task/*\/stat before and after, summed by thread
 * name (bun's main thread, JSC's "HeapHelper" collector threads, "JITWorker", Bun's pools…).
 * Rounds interleave the paths; the figures are medians over rounds.
 *
 *   bun bench/threads.ts [connections=1] [seconds=5] [rounds=3] [targets…]
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { threadCpu } from './lib/proc.ts'
import { median } from './lib/stats.ts'
import { PATH_TARGETS, type PathTarget, type StartedTarget, startTarget } from './lib/targets.ts'
import { wrk } from './lib/wrk.ts'

const connections = Number(process.argv[2] ?? 1)
const seconds = Number(process.argv[3] ?? 5)
const rounds = Number(process.argv[4] ?? 3)
const targets = (process.argv.length > 5 ? process.argv.slice(5) : PATH_TARGETS) as PathTarget[]

const dir = mkdtempSync(join(tmpdir(), 'mls-threads-'))
const started = new Map<PathTarget, StartedTarget>()
const perRound = new Map<PathTarget, Array<Map<string, number>>>()
try {
  for (const target of targets) {
    const running = await startTarget(target, dir)
    started.set(target, running)
    await wrk({ url: `${running.url}/task/request`, body: running.body }, connections, 2)
  }
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < targets.length; i++) {
      const target = targets[(i + round) % targets.length]!
      const running = started.get(target)!
      const before = threadCpu(running.proxy.pid)
      const result = await wrk({ url: `${running.url}/task/request`, body: running.body }, connections, seconds)
      const after = threadCpu(running.proxy.pid)
      const perTask = new Map<string, number>()
      for (const [name, value] of after) perTask.set(name, (value - (before.get(name) ?? 0)) / result.requests)
      perTask.set('total', [...after].filter(([n]) => !n.includes(':')).reduce((sum, [n, v]) => sum + v - (before.get(n) ?? 0), 0) / result.requests)
      perTask.set('req/s', result.requests / (result.duration_us / 1e6))
      perTask.set('p50 µs', result.p50_us)
      perTask.set('p99 µs', result.p99_us)
      const list = perRound.get(target) ?? []
      list.push(perTask)
      perRound.set(target, list)
    }
  }
} finally {
  for (const running of [...started.values()].reverse()) await Promise.all(running.children.reverse().map((child) => child.stop()))
}
console.log(`wrk -c${connections}, ${seconds} s × ${rounds} rounds; medians; CPU in µs per task by thread (user+sys, :user, :sys)`)
for (const target of targets) {
  const list = perRound.get(target)!
  const names = [...new Set(list.flatMap((m) => [...m.keys()]))].sort()
  const row = Object.fromEntries(
    names.map((name) => [name, Math.round(median(list.map((m) => m.get(name) ?? 0)) * 10) / 10] as const).filter(([, v]) => v !== 0),
  )
  console.log(`${target}: ${JSON.stringify(row)}`)
}
