/**
 * Where an idle WebSocket agent's server memory goes: N agents register (region idle-pool, as the
 * connections phase), on this tree's Moonlight, another checkout's (`--before DIR`, e.g. unpacked
 * with `git archive`) and the floor (a bare Bun server answering register, one topic per socket:
 * agents/broadcast-floor.ts), each preloaded with lib/alloc-probe.ts. Per agent: RSS growth, and
 * after full collections the RSS again, the JS heap's live bytes, its capacity (what the collector
 * holds from the system, live or not: it grows with the live heap) and the cells by type. Memory,
 * not time, but it spawns thousands of sockets: run it under the bench lock on a shared machine.
 *
 *   bun bench/idle-memory.ts [N=5000] [--before DIR]
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startMoonlight } from './lib/moonlight.ts'
import { type Child, rssBytes, spawnChild } from './lib/proc.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

const { values, positionals } = parseArgs({ options: { before: { type: 'string' } }, allowPositionals: true })
const N = Number(positionals[0] ?? 5000)
const PER_PROCESS = 5000
const probe = join(import.meta.dir, 'lib', 'alloc-probe.ts')
const dir = mkdtempSync(join(tmpdir(), 'mls-idle-memory-'))

interface Reading {
  counts: Record<string, number>
  heap_bytes: number
  heap_capacity: number
}

async function measure(label: string, start: () => Promise<{ server: Child; wsUrl: string }>): Promise<void> {
  const { server, wsUrl } = await start()
  const agents: Child[] = []
  try {
    const port = Number((await server.waitFor(/alloc probe on port (\d+)/))[1])
    const read = async () => (await (await fetch(`http://127.0.0.1:${port}/counts?gc=1`)).json()) as Reading
    await Bun.sleep(2000)
    const rss0 = rssBytes(server.pid)
    const r0 = await read()
    const rss0gc = rssBytes(server.pid)
    for (let offset = 0; offset < N; offset += PER_PROCESS) {
      agents.push(spawnWsAgents(`${label}-${offset}`, wsUrl, { count: Math.min(PER_PROCESS, N - offset), region: 'idle-pool', prefix: `idle-${offset}` }))
    }
    await Promise.all(agents.map((agent) => agent.waitFor(/registered \d+ in/, 120_000)))
    await Bun.sleep(2000)
    const rss1 = rssBytes(server.pid)
    const r1 = await read()
    const rss1gc = rssBytes(server.pid)
    const per = (from: number, to: number) => Math.round((to - from) / N)
    console.log(
      `${label}: RSS ${per(rss0, rss1)} B/agent (after full collections ${per(rss0gc, rss1gc)}); JS heap live ${per(r0.heap_bytes, r1.heap_bytes)} B, capacity ${per(r0.heap_capacity, r1.heap_capacity)} B`,
    )
    const rows = Object.keys(r1.counts)
      .map((type) => [type, ((r1.counts[type] ?? 0) - (r0.counts[type] ?? 0)) / N] as const)
      .filter(([, perAgent]) => Math.abs(perAgent) >= 0.05)
      .sort((a, b) => b[1] - a[1])
    console.log(`  cells per agent: ${rows.map(([type, perAgent]) => `${perAgent.toFixed(2)} ${type}`).join(', ')}`)
  } finally {
    await Promise.all(agents.map((agent) => agent.stop()))
    await server.stop()
  }
}

const moonlightAt = (root: string | undefined, name: string) => async () => {
  const server = await startMoonlight(dir, { name, bunArgs: ['--preload', probe], ...(root ? { root } : {}) })
  return { server, wsUrl: server.wsUrl }
}
await measure('moonlight', moonlightAt(undefined, 'moonlight-now'))
if (values.before) await measure('before', moonlightAt(values.before, 'moonlight-before'))
await measure('floor', async () => {
  const server = spawnChild('idle-floor', [process.execPath, '--preload', probe, join(import.meta.dir, 'agents', 'broadcast-floor.ts'), '--port', '0'])
  const [, port] = await server.waitFor(/listening on (\d+)/, 10_000)
  return { server, wsUrl: `ws://127.0.0.1:${port}/ws` }
})
