import { join } from 'node:path'
import { BENCH_TOKEN } from './moonlight.ts'
import { type Child, spawnChild } from './proc.ts'

/** Starts `count` trivial WebSocket agents (bench/agents/ws-agents.ts) in one process, registered at `wsUrl`. */
export function spawnWsAgents(name: string, wsUrl: string, options: { count: number; region: string; prefix?: string }): Child {
  return spawnChild(name, [
    process.execPath,
    join(import.meta.dir, '..', 'agents', 'ws-agents.ts'),
    '--url',
    wsUrl,
    '--token',
    BENCH_TOKEN,
    '--count',
    String(options.count),
    '--region',
    options.region,
    ...(options.prefix === undefined ? [] : ['--prefix', options.prefix]),
  ])
}
