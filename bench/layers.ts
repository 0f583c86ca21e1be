/**
 * Where the HTTP path's CPU goes, layer by layer, in one run: each path under `wrk -cC`, rounds
 * interleaved, the order rotated, the proxy's CPU per task (main thread and whole process) read from /proc.
 *   text       bench/agents/text-relay.ts: the body passed through unparsed (the floor)
 *   textc      the same with what Moonlight's contract asks of every task (TEXT_RELAY_CONTRACT=1:
 *              token by SHA-256, body parsed, payload cut out, X-Task-Id, the answer's six headers)
 *   socket | pool | transport   bench/agents/bun-relay.ts over a bare socket pool, Moonlight's HttpClientPool, its HttpTransport
 *   base       Moonlight → HTTP agent
 *
 *   bun bench/layers.ts [connections=1] [seconds=4] [rounds=3] text textc transport base
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HTTP_REGION, WS_REGION } from './http-path.ts'
import { startBenchHttpAgent, startBunRelay } from './lib/bench-processes.ts'
import { cpuTimeUs, mainThreadCpuUs } from './lib/proc.ts'
import { median } from './lib/stats.ts'
import { type StartedTarget, startTarget } from './lib/targets.ts'
import { BODY, wrk } from './lib/wrk.ts'

const LAYERS = ['text', 'textc', 'socket', 'pool', 'transport', 'base'] as const
type Layer = (typeof LAYERS)[number]

const connections = Number(process.argv[2] ?? 1)
const seconds = Number(process.argv[3] ?? 4)
const rounds = Number(process.argv[4] ?? 3)
const layers = process.argv.slice(5) as Layer[]
for (const layer of layers) if (!LAYERS.includes(layer)) throw new Error(`unknown layer ${layer}: one of ${LAYERS.join(', ')}`)

async function start(layer: Layer): Promise<StartedTarget> {
  const dir = mkdtempSync(join(tmpdir(), 'mls-layers-'))
  if (layer === 'base') return startTarget('moonlight-http', dir)
  if (layer === 'text' || layer === 'textc') return startTarget('text-http', dir, [], layer === 'textc' ? { TEXT_RELAY_CONTRACT: '1' } : {})
  const { child: agent, port } = await startBenchHttpAgent([], HTTP_REGION)
  const relay = await startBunRelay(port, WS_REGION, layer)
  return { url: relay.url, body: BODY(HTTP_REGION), proxy: relay.child, children: [agent, relay.child] }
}

interface Round {
  mainUs: number
  processUs: number
  p50Us: number
  rps: number
}
const started: Array<[Layer, StartedTarget]> = []
const measured = new Map<Layer, Round[]>()
try {
  for (const layer of layers) {
    const target = await start(layer)
    started.push([layer, target])
    await wrk({ url: `${target.url}/task/request`, body: target.body }, connections, 10)
  }
  for (let round = 0; round < rounds; round++)
    for (let i = 0; i < started.length; i++) {
      const [layer, target] = started[(i + round) % started.length]!
      const { pid } = target.proxy
      const [mainBefore, processBefore] = [mainThreadCpuUs(pid), cpuTimeUs(pid)]
      const result = await wrk({ url: `${target.url}/task/request`, body: target.body }, connections, seconds)
      const list = measured.get(layer) ?? []
      list.push({
        mainUs: (mainThreadCpuUs(pid) - mainBefore) / result.requests,
        processUs: (cpuTimeUs(pid) - processBefore) / result.requests,
        p50Us: result.p50_us,
        rps: result.requests / (result.duration_us / 1e6),
      })
      measured.set(layer, list)
    }
} finally {
  for (const [, target] of started.reverse()) await Promise.all(target.children.reverse().map((child) => child.stop()))
}
console.log(`c${connections} ${seconds}s x${rounds}: layer: main µs/task, process µs/task, p50 µs, req/s (medians; then each round's main)`)
for (const [layer, list] of measured) {
  const figures = (['mainUs', 'processUs', 'p50Us', 'rps'] as const).map((field) => median(list.map((round) => round[field])).toFixed(1))
  console.log(layer.padEnd(10), figures.join('  '), ' rounds:', list.map((round) => round.mainUs.toFixed(0)).join(' '))
}
