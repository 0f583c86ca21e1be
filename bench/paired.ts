/**
 * A small change's A/B on the task path, in pairs: this checkout's Moonlight and another commit's run
 * side by side (one HTTP agent registered with both; with --ws, a WebSocket agent each, and the tasks
 * go to them), and wrk drives them in turn, N pairs of runs,
 * each pair in the other order from the last. Each pair's ratio of proxy CPU per task (this / before)
 * is taken within seconds, so what moves the whole box between rounds (this shared box's speed swings
 * by up to 1.7 × from minute to minute: see docs/benchmarks.md) moves both sides of a pair alike. It
 * prints every pair and the median ratio with how many pairs came out lower.
 *
 *   bun bench/paired.ts REF [connections=1] [pairs=10] [seconds=3] [--ws] [--env=NAME=VALUE…]
 *
 * REF is a commit, or a directory holding a checkout (an A/A run: this checkout's own path calibrates
 * the method; its median ratio should come out near 1). bench/run.sh --before REF is the full A/B
 * (throughput, p99, every floor); this one sees a ~2 % change the rounds of run.sh cannot.
 */
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HTTP_REGION, WS_REGION } from './http-path.ts'
import { startMoonlightsWithAgent } from './lib/bench-processes.ts'
import { checkoutAt } from './lib/checkout.ts'
import { type Child, cpuTimeUs, killAll } from './lib/proc.ts'
import { median } from './lib/stats.ts'
import { BODY, wrk } from './lib/wrk.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

const ws = process.argv.includes('--ws')
// --env=NAME=VALUE (repeatable): set for this checkout's Moonlight only, to weigh a runtime option
// (a JSC or Bun setting) against the same code without it; REF is then usually this checkout (`.`).
const nowEnv = Object.fromEntries(
  process.argv
    .filter((arg) => arg.startsWith('--env='))
    .map((arg) => {
      const [name, ...value] = arg.slice('--env='.length).split('=')
      return [name!, value.join('=')]
    }),
)
const [ref, connectionsArg, pairsArg, secondsArg] = process.argv.slice(2).filter((arg) => !arg.startsWith('--'))
if (ref === undefined) {
  console.error('usage: bun bench/paired.ts REF [connections=1] [pairs=10] [seconds=3] [--ws] [--env=NAME=VALUE…]')
  process.exit(2)
}
const connections = Number(connectionsArg ?? 1)
const pairs = Number(pairsArg ?? 10)
const seconds = Number(secondsArg ?? 3)
const workDir = mkdtempSync(join(tmpdir(), 'moonlight-paired-'))
const beforeRoot = existsSync(join(ref, 'src')) ? ref : checkoutAt(ref, join(workDir, 'before'))
const children: Child[] = []
process.on('SIGINT', () => {
  killAll()
  process.exit(130)
})

try {
  const { moonlight, before } = await startMoonlightsWithAgent(workDir, children, 'now', HTTP_REGION, {}, beforeRoot, nowEnv)
  const sides = { now: moonlight, before: before! }
  if (ws)
    for (const [name, side] of Object.entries(sides)) {
      const agent = spawnWsAgents(`ws-agent-${name}`, side.wsUrl, { count: 1, region: WS_REGION })
      children.push(agent)
      await agent.waitFor(/registered 1 in/)
    }
  const body = BODY(ws ? WS_REGION : HTTP_REGION)
  const cpuPerTask = async (side: keyof typeof sides, durationS: number): Promise<number> => {
    const { pid, url } = sides[side]
    const startUs = cpuTimeUs(pid)
    const run = await wrk({ url: `${url}/task/request`, body }, connections, durationS)
    if (run.non_2xx > 0 || run.requests === 0) throw new Error(`${side}: ${run.non_2xx} failed of ${run.requests}`)
    return (cpuTimeUs(pid) - startUs) / run.requests
  }
  // Warm both up (the JIT, the pool's connections) before anything counts.
  await cpuPerTask('now', 2)
  await cpuPerTask('before', 2)
  const ratios: number[] = []
  const figures = { now: [] as number[], before: [] as number[] }
  for (let pair = 0; pair < pairs; pair++) {
    const order = pair % 2 === 0 ? (['now', 'before'] as const) : (['before', 'now'] as const)
    const pairFigures = { now: 0, before: 0 }
    for (const side of order) pairFigures[side] = await cpuPerTask(side, seconds)
    figures.now.push(pairFigures.now)
    figures.before.push(pairFigures.before)
    ratios.push(pairFigures.now / pairFigures.before)
    console.log(
      `pair ${pair + 1}: proxy CPU per task ${pairFigures.now.toFixed(1)} µs, before ${pairFigures.before.toFixed(1)} µs, ratio ${ratios.at(-1)!.toFixed(3)}`,
    )
  }
  const lower = ratios.filter((ratio) => ratio < 1).length
  console.log(
    `${ws ? 'WebSocket' : 'HTTP'} path, ${connections} connection(s), ${pairs} pairs of ${seconds} s: proxy CPU per task ${median(figures.now).toFixed(1)} µs against ${median(figures.before).toFixed(1)} µs (medians); median of the pairs' ratios ${median(ratios).toFixed(3)}, ${lower} of ${pairs} pairs lower`,
  )
} finally {
  await Promise.all(children.reverse().map((child) => child.stop()))
}
