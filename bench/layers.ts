/**
 * Where the HTTP path's CPU goes, layer by layer, in one run: each path under `wrk -cC`, rounds
 * interleaved, the order rotated, the proxy's CPU per task (main thread and whole process) read from /proc.
 *   text       bench/agents/text-relay.ts: the body passed through unparsed (the floor)
 *   textc      the same with what Moonlight's contract asks of every task (TEXT_RELAY_CONTRACT=1:
 *              token by SHA-256, body parsed, payload cut out, X-Task-Id, the answer's six headers)
 *   socket | pool | transport   bench/agents/bun-relay.ts over a bare socket pool, Moonlight's HttpClientPool, its HttpTransport
 *   base       Moonlight → HTTP agent
 *   any other word: Moonlight started with MLS_ABLATE=<word> (for a patched tree that reads it)
 *
 *   bun bench/layers.ts [connections=1] [seconds=4] [rounds=3] text textc transport base
 */
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HTTP_REGION, WS_REGION } from './http-path.ts'
import { startBenchHttpAgent, startBunRelay } from './lib/bench-processes.ts'
import { type StartedTarget, startTarget } from './lib/targets.ts'
import { BODY, wrk } from './lib/wrk.ts'

const conns = Number(process.argv[2] ?? 1)
const seconds = Number(process.argv[3] ?? 4)
const rounds = Number(process.argv[4] ?? 3)
const variants = process.argv.slice(5)
function cpu(pid: number): [number, number] {
  const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const all = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
  return [(Number(f[11]) + Number(f[12])) * 1e4, (Number(all[11]) + Number(all[12])) * 1e4]
}
const started: [string, StartedTarget][] = []
const res = new Map<string, number[][]>()
try {
  for (const v of variants) {
    const dir = mkdtempSync(join(tmpdir(), 'abl-'))
    const relayKind = ['socket', 'pool', 'transport'].includes(v) ? (v as 'socket') : undefined
    const t: StartedTarget = relayKind
      ? await (async () => {
          const { child: agent, port } = await startBenchHttpAgent([], HTTP_REGION)
          const relay = await startBunRelay(port, WS_REGION, relayKind)
          return { url: relay.url, body: BODY(HTTP_REGION), proxy: relay.child, children: [agent, relay.child] }
        })()
      : v === 'text' || v === 'textc'
        ? await startTarget('text-http', dir, [], v === 'textc' ? { TEXT_RELAY_CONTRACT: '1' } : {})
        : await startTarget('moonlight-http', dir, [], { MLS_ABLATE: v === 'base' ? '' : v })
    started.push([v, t])
    await wrk({ url: `${t.url}/task/request`, body: t.body }, conns, 10)
  }
  for (let r = 0; r < rounds; r++)
    for (let i = 0; i < started.length; i++) {
      const [v, t] = started[(i + r) % started.length]!
      const b = cpu(t.proxy.pid)
      const w = await wrk({ url: `${t.url}/task/request`, body: t.body }, conns, seconds)
      const a = cpu(t.proxy.pid)
      const list = res.get(v) ?? []
      list.push([(a[0] - b[0]) / w.requests, (a[1] - b[1]) / w.requests, w.p50_us, w.requests / (w.duration_us / 1e6)])
      res.set(v, list)
    }
} finally {
  for (const [, t] of started.reverse()) await Promise.all(t.children.reverse().map((c) => c.stop()))
}
const med = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!
console.log(`c${conns} ${seconds}s x${rounds}: variant: main µs/task, process µs/task, p50 µs, req/s (medians; all rounds of main)`)
for (const [v, list] of res)
  console.log(v.padEnd(8), [0, 1, 2, 3].map((k) => med(list.map((x) => x[k]!)).toFixed(1)).join('  '), ' rounds:', list.map((x) => x[0]!.toFixed(0)).join(' '))
