/**
 * Whether the JIT keeps recompiling on a path once warm: drives one path (lib/targets.ts) with
 * `wrk -cC` in back-to-back windows and prints, per window, the JITWorker thread's CPU per task and
 * the functions JavaScriptCore compiled or recompiled in it (BUN_JSC_reportCompileTimes and
 * BUN_JSC_verboseOSR-free: the compile log lines only), the most frequent first.
 *
 *   bun bench/jit-churn.ts [target=moonlight-http] [windows=6] [seconds=5] [connections=1]
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { threadCpu } from './lib/proc.ts'
import { type PathTarget, startTarget } from './lib/targets.ts'
import { wrk } from './lib/wrk.ts'

const target = (process.argv[2] ?? 'moonlight-http') as PathTarget
const windows = Number(process.argv[3] ?? 6)
const seconds = Number(process.argv[4] ?? 5)
const connections = Number(process.argv[5] ?? 1)

function jitCpuUs(pid: number): number {
  return threadCpu(pid).get('JITWorker') ?? 0
}

const dir = mkdtempSync(join(tmpdir(), 'mls-jit-'))
const running = await startTarget(target, dir, [], { BUN_JSC_reportCompileTimes: 'true' })
try {
  for (let window = 1; window <= windows; window++) {
    const outputBefore = running.proxy.output().length
    const before = jitCpuUs(running.proxy.pid)
    const result = await wrk({ url: `${running.url}/task/request`, body: running.body }, connections, seconds)
    const jit = (jitCpuUs(running.proxy.pid) - before) / result.requests
    const log = running.proxy.output().slice(outputBefore)
    const compiled = new Map<string, number>()
    for (const line of log.split('\n')) {
      const match = /Optimized (\S+) .*? (?:with|using) (\S+)/.exec(line) ?? /(\S+#\S+)/.exec(line)
      if (!match) continue
      const key = match[2] ? `${match[1]} ${match[2]}` : match[1]!
      compiled.set(key, (compiled.get(key) ?? 0) + 1)
    }
    const top = [...compiled].sort((a, b) => b[1] - a[1]).slice(0, 12)
    console.log(
      `window ${window}: ${result.requests} tasks, JITWorker ${jit.toFixed(1)} µs/task, ${[...compiled.values()].reduce((a, b) => a + b, 0)} compiles`,
    )
    for (const [name, count] of top) console.log(`   ${String(count).padStart(4)}  ${name}`)
  }
} finally {
  await Promise.all(running.children.reverse().map((child) => child.stop()))
}
