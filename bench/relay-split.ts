/**
 * Where a relayed task's CPU goes, process by process: user and system time of A, B and Redis per
 * task (main thread and the rest), and the syscalls and context switches each makes per task
 * (`perf stat -e raw_syscalls:sys_enter,context-switches`, counted in the kernel, no sampling), on
 * the relayed path (wrk → A → Redis → B → its agent) and on the local one (wrk → A → A's agent)
 * beside it, interleaved. Run it under the bench lock.
 *
 *   bun bench/relay-split.ts [seconds=4] [rounds=2] [connections=64]
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LOCAL_REGION, REMOTE_REGION, startRedis, startWsAgent } from './cluster.ts'
import { startMoonlight } from './lib/moonlight.ts'
import { type Child, threadCpu } from './lib/proc.ts'
import { median, round } from './lib/stats.ts'
import { BODY, wrk } from './lib/wrk.ts'

const seconds = Number(process.argv[2] ?? 4)
const rounds = Number(process.argv[3] ?? 2)
const connections = Number(process.argv[4] ?? 64)
const dir = mkdtempSync(join(tmpdir(), 'mls-relay-split-'))
const children: Child[] = []

/** user and system µs of a process's main thread and of its other threads. */
function cpu(pid: number): Record<string, number> {
  const out: Record<string, number> = { 'main:user': 0, 'main:sys': 0, 'other:user': 0, 'other:sys': 0 }
  for (const [name, us] of threadCpu(pid)) {
    const part = name.endsWith(':user') ? 'user' : name.endsWith(':sys') ? 'sys' : undefined
    if (part !== undefined) out[`${name.startsWith('main:') ? 'main' : 'other'}:${part}`]! += us
  }
  return out
}

/** Syscalls and context switches of `pid` while `work` runs. */
async function counted(pids: Record<string, number>, work: () => Promise<number>): Promise<{ tasks: number; counts: Record<string, number> }> {
  const perf = Object.entries(pids).map(([name, pid]) => {
    const child = Bun.spawn(['perf', 'stat', '-x,', '-e', 'raw_syscalls:sys_enter,context-switches', '-p', String(pid)], { stderr: 'pipe' })
    return { name, child }
  })
  await Bun.sleep(200)
  const tasks = await work()
  const counts: Record<string, number> = {}
  for (const { name, child } of perf) {
    child.kill('SIGINT')
    const text = await new Response(child.stderr).text()
    for (const line of text.split('\n')) {
      const [value, , event] = line.split(',')
      if (event?.includes('sys_enter')) counts[`${name} syscalls`] = Number(value)
      if (event?.includes('context-switches')) counts[`${name} ctx`] = Number(value)
    }
  }
  return { tasks, counts }
}

try {
  const redis = await startRedis()
  children.push(redis.child)
  const cluster = (id: string) => ({ cluster: { redis_url: redis.url, instance_id: id, key_prefix: 'mls-split:' } })
  const a = await startMoonlight(dir, { name: 'a', config: cluster('a') })
  children.push(a)
  const b = await startMoonlight(dir, { name: 'b', config: cluster('b') })
  children.push(b)
  const agents = [startWsAgent(a, LOCAL_REGION, 'a-held'), startWsAgent(b, REMOTE_REGION, 'b-held')]
  children.push(...agents)
  await Promise.all(agents.map((agent) => agent.waitFor(/registered 1 in/)))
  const load = (region: string) => ({ url: `${a.url}/task/request`, body: BODY(region) })
  // A hears of B's agent through Redis: warm both paths up until the relayed one answers.
  for (let i = 0; i < 100; i++) {
    const response = await fetch(load(REMOTE_REGION).url, {
      method: 'POST',
      headers: { authorization: 'Bearer bench-token-0123456789', 'content-type': 'application/json' },
      body: load(REMOTE_REGION).body,
    })
    if (response.headers.get('x-moonlight-instance') === 'b') break
    await Bun.sleep(100)
  }
  for (const region of [LOCAL_REGION, REMOTE_REGION]) await wrk(load(region), connections, 2)
  const pids = { A: a.pid, B: b.pid, redis: redis.child.pid }
  const rows = new Map<string, Map<string, number[]>>()
  for (let roundNo = 1; roundNo <= rounds; roundNo++) {
    for (const [path, region] of roundNo % 2
      ? [
          ['local', LOCAL_REGION],
          ['relayed', REMOTE_REGION],
        ]
      : [
          ['relayed', REMOTE_REGION],
          ['local', LOCAL_REGION],
        ]) {
      const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpu(pid)]))
      const { tasks, counts } = await counted(pids, async () => (await wrk(load(region!), connections, seconds)).requests)
      const row = rows.get(path!) ?? new Map<string, number[]>()
      rows.set(path!, row)
      const add = (key: string, value: number) => row.set(key, [...(row.get(key) ?? []), value / tasks])
      row.set('req/s', [...(row.get('req/s') ?? []), tasks / seconds])
      for (const [name, pid] of Object.entries(pids)) {
        const after = cpu(pid)
        for (const key of Object.keys(after)) add(`${name} ${key} µs`, after[key]! - before[name]![key]!)
      }
      for (const [key, value] of Object.entries(counts)) add(key, value)
    }
  }
  const keys = [...new Set([...rows.values()].flatMap((row) => [...row.keys()]))]
  console.log(`| per task (median of ${rounds} rounds, ${seconds} s, ${connections} connections) | ${[...rows.keys()].join(' | ')} |`)
  console.log(`|---|${[...rows.keys()].map(() => '---:').join('|')}|`)
  for (const key of keys) console.log(`| ${key} | ${[...rows.values()].map((row) => round(median(row.get(key) ?? [0]), 2)).join(' | ')} |`)
} finally {
  await Promise.all(children.reverse().map((child) => child.stop()))
}
