/**
 * Syscalls per task of Moonlight's HTTP path and of the bare socket-pool relay, side by side:
 * `strace -c -f` attached to each proxy while wrk drives it (strace slows both alike; only the counts
 * per task are read, not the times).
 *
 *   bun bench/syscalls.ts [seconds]
 */

import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HTTP_REGION, WS_REGION } from './http-path.ts'
import { startBenchHttpAgent, startBunRelay } from './lib/bench-processes.ts'
import { startMoonlight } from './lib/moonlight.ts'
import type { Child } from './lib/proc.ts'
import { BODY, wrk } from './lib/wrk.ts'

const seconds = Number(process.argv[2] ?? 3)
const dir = mkdtempSync(join(tmpdir(), 'mls-syscalls-'))
const children: Child[] = []
try {
  const moonlight = await startMoonlight(dir)
  children.push(moonlight)
  const { child: agent, port: agentPort } = await startBenchHttpAgent([moonlight.url], HTTP_REGION)
  children.push(agent)
  const { child: relay, url: relayUrl } = await startBunRelay(agentPort, WS_REGION, 'socket')
  children.push(relay)
  for (const [name, url, pid] of [
    ['Moonlight → HTTP agent', moonlight.url, moonlight.pid],
    ['bare socket-pool relay → HTTP agent', relayUrl, relay.pid],
  ] as const) {
    await wrk({ url: `${url}/task/request`, body: BODY(HTTP_REGION) }, 64, 1)
    const out = join(dir, `${pid}.strace`)
    const strace = Bun.spawn(['strace', '-c', '-f', '-o', out, '-p', String(pid)], { stderr: 'ignore' })
    await Bun.sleep(300)
    const result = await wrk({ url: `${url}/task/request`, body: BODY(HTTP_REGION) }, 64, seconds)
    strace.kill('SIGINT')
    await strace.exited
    console.log(`\n${name}: ${result.requests} tasks under strace`)
    for (const line of readFileSync(out, 'utf8').split('\n')) {
      const match = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/.exec(line)
      if (match && Number(match[1]) / result.requests >= 0.01)
        console.log(`  ${(Number(match[1]) / result.requests).toFixed(2).padStart(6)} ${match[2]} per task`)
    }
  }
} finally {
  await Promise.all(children.reverse().map((child) => child.stop()))
}
