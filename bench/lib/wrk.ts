/** wrk, the load generator: one thread, N keep-alive connections, the POST script, JSON out. */
import { join } from 'node:path'
import { BENCH_TOKEN } from './moonlight.ts'

const WRK_SCRIPT = join(import.meta.dir, '..', 'wrk', 'post.lua')

/** The small task every path carries; the region picks Moonlight's HTTP or WebSocket agent. */
export const BODY = (region: string) => JSON.stringify({ region, payload: { job: 'resize', image: 'cat.png', width: 64 } })

export interface WrkTarget {
  url: string
  body: string
}

export interface WrkJson {
  requests: number
  duration_us: number
  connect_errors: number
  read_errors: number
  write_errors: number
  non_2xx: number
  timeouts: number
  p50_us: number
  p90_us: number
  p99_us: number
  p999_us: number
  max_us: number
  /** wrk's own CPU time (user + system) over the run, µs: the load generator shares the box. */
  cpu_us: number
}

/** `ratePerS`: pace requests on a fixed schedule (all connections together) instead of back to back. */
export async function wrk(endpoint: WrkTarget, connections: number, durationS: number, ratePerS?: number): Promise<WrkJson> {
  // `timeout` bounds wrk even if a target hangs; wrk's own --timeout bounds each request.
  const command = ['timeout', String(durationS + 20), 'wrk', '-t1', `-c${connections}`, `-d${durationS}s`, '--timeout', '10s', '-s', WRK_SCRIPT, endpoint.url]
  const child = Bun.spawn(command, {
    env: { ...process.env, BENCH_BODY: endpoint.body, BENCH_TOKEN, BENCH_RATE: ratePerS === undefined ? '' : String(ratePerS) },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()])
  await child.exited
  const usage = child.resourceUsage()
  const cpuUs = usage ? Number(usage.cpuTime.user + usage.cpuTime.system) : 0
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '))
  if (!line) throw new Error(`wrk printed no result for ${endpoint.url} (exit ${child.exitCode}):\n${stdout}\n${stderr}`)
  return { ...(JSON.parse(line.slice('WRK_JSON '.length)) as Omit<WrkJson, 'cpu_us'>), cpu_us: cpuUs }
}
