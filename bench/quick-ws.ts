/**
 * A quick A/B of the WebSocket task path between checkouts, for hunting a regression: for each root,
 * a Moonlight and one WebSocket agent, wrk for a few seconds, the server's CPU per task. Interleaved.
 *
 *   bun bench/quick-ws.ts ROOT_A ROOT_B [rounds] [seconds]
 */

import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WS_REGION } from './http-path.ts'
import { startMoonlight } from './lib/moonlight.ts'
import { cpuTimeUs } from './lib/proc.ts'
import { BODY, wrk } from './lib/wrk.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

const [rootA = '.', rootB = '.', roundsText = '3', secondsText = '4'] = process.argv.slice(2)
const rows: Record<string, number[]> = { [rootA]: [], [rootB]: [] }
for (let round = 0; round < Number(roundsText); round++) {
  for (const root of [rootA, rootB]) {
    const dir = mkdtempSync(join(tmpdir(), 'mls-quick-'))
    const moonlight = await startMoonlight(dir, { root })
    const agents = spawnWsAgents('ws-agents', moonlight.wsUrl, { count: 1, region: WS_REGION })
    await agents.waitFor(/registered/)
    const before = cpuTimeUs(moonlight.pid)
    const result = await wrk({ url: `${moonlight.url}/task/request`, body: BODY(WS_REGION) }, 64, Number(secondsText))
    const cpu = cpuTimeUs(moonlight.pid) - before
    rows[root]!.push(cpu / result.requests)
    console.log(`${root}: ${Math.round(result.requests / (result.duration_us / 1e6))} req/s, ${(cpu / result.requests).toFixed(1)} µs CPU per task`)
    await agents.stop()
    await moonlight.stop()
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
console.log(`median CPU per task: ${rootA} ${median(rows[rootA]!).toFixed(1)} µs, ${rootB} ${median(rows[rootB]!).toFixed(1)} µs`)
