/**
 * Measurement 7: cluster mode (src/cluster/). One redis-server (started here, on a free port, no
 * persistence), two Moonlight instances A and B sharing one fleet through it, one standalone
 * Moonlight S, and four trivial WebSocket agents (bench/agents/ws-agents.ts), all on 127.0.0.1:
 *
 *   local          wrk → A, for A's own agent (eu-west-1)
 *   relayed        wrk → A, for B's agent (us-west-1): A publishes the task on B's relay channel,
 *                  B sends it down its agent's socket, and publishes the answer on A's reply channel
 *   one-instance   two wrk (half the connections each) → S, which holds both of its agents
 *   two-instances  one wrk (half the connections) → A for A's agent, one → B for B's agent: no relay
 *   relayed-before with --before: the relayed path again through A0 and B0, a cluster of the older
 *                  commit's Moonlight on the same Redis (another key prefix), for the A/B in one run
 *
 * The two regions' names have the same length, so every path carries the same bytes. Rounds
 * interleave the four (the order rotated each round); ratios are medians of per-round ratios, with
 * their range over the rounds. A's relay counter (/metrics) checks that every relayed task was relayed
 * and that no other was. Everything started here is stopped here, also when a step fails.
 */

import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { BENCH_TOKEN, type MoonlightProcess, startMoonlight } from './lib/moonlight.ts'
import { type Child, cpuTimeUs, freePort, loadAverage, spawnChild } from './lib/proc.ts'
import { median, round } from './lib/stats.ts'
import { BODY, type WrkJson, wrk } from './lib/wrk.ts'
import { spawnWsAgents } from './lib/ws-agents.ts'

export const CLUSTER_TARGETS = ['local', 'relayed', 'one-instance', 'two-instances', 'relayed-before'] as const
export type ClusterTarget = (typeof CLUSTER_TARGETS)[number]

/** A's own agent's region, and B's: names of the same length, so the bodies weigh the same. */
export const LOCAL_REGION = 'eu-west-1'
export const REMOTE_REGION = 'us-west-1'

export interface ClusterOptions {
  rounds: number
  durationS: number
  /** wrk's connections per target; split in two halves for the one- and two-instance targets. */
  connections: number
  warmupS: number
  workDir: string
  log: (line: string) => void
  /** Another checkout's root (bench/run.ts --before): its A0 and B0 run the relayed-before path. */
  beforeRoot?: string
}

/** CPU time (user + system, all threads) per task, in µs, of each process during one run. */
export interface CpuPerTask {
  /** Instance A (the one wrk calls for local and relayed). */
  a: number
  /** Instance B (the holder of the relayed agent). */
  b: number
  /** The standalone instance. */
  single: number
  redis: number
  /** The four agents together (only the ones the run uses do any work). */
  agents: number
  /** The load generator (the run's wrk processes). */
  wrk: number
  /** All of the above but wrk: the work of serving a task. */
  total: number
}

export interface ClusterRun {
  target: ClusterTarget
  round: number
  /** Over all the run's wrk processes. */
  rps: number
  /** With two wrk processes: the higher of their two (wrk's summary cannot be merged exactly). */
  p50_us: number
  p99_us: number
  requests: number
  errors: number
  cpu_us_per_task: CpuPerTask
  /** Tasks A and B relayed during the run (their moonlight_cluster_relays_total). */
  relays: number
  /** Cores kept busy by the processes above, wrk included: their CPU time over the run's wall time. */
  cores_used: number
  /** Cores busy on the whole machine during the run (from /proc/stat): more than cores_used when other work shares the box. */
  box_cores_busy: number
  load1: number
}

export interface ClusterSummary {
  rps: number
  p50_us: number
  p99_us: number
  cpu_us_per_task: CpuPerTask
  /** Relays counted over requests answered, all rounds together: 1 for relayed, 0 elsewhere. */
  relays_per_task: number
  cores_used: number
  box_cores_busy: number
  errors: number
}

/** A median over rounds with its range. */
export interface Spread {
  median: number
  min: number
  max: number
}

export interface ClusterResult {
  settings: { rounds: number; duration_s: number; connections: number; wrk_threads: number; body: string; redis: string }
  runs: ClusterRun[]
  /** Medians over rounds. */
  summary: Partial<Record<ClusterTarget, ClusterSummary>>
  /** Per-round ratios: their median and range. */
  ratios: {
    relayed_rps_vs_local: Spread
    relayed_p50_vs_local: Spread
    relayed_p99_vs_local: Spread
    /** A's CPU per task, relayed over local. */
    relayed_a_cpu_vs_local: Spread
    /** The whole machine's CPU per task (A, B, Redis, agents), relayed over local. */
    relayed_total_cpu_vs_local: Spread
    two_rps_vs_one: Spread
    two_p99_vs_one: Spread
    /** Server CPU per task: A + B over S. */
    two_server_cpu_vs_one: Spread
  }
  /** What one relayed task costs beyond a local one, in CPU µs (per-round figures: median and range). */
  relay_cost: {
    /** A's CPU per relayed task minus A's per local task: publishing the task, reading the reply. */
    a_extra_us: Spread
    /** B's CPU per relayed task: reading the task, the agent's socket, publishing the answer. */
    b_us: Spread
    /** Redis's CPU per relayed task: two PUBLISH commands and two messages delivered. */
    redis_us: Spread
    /** A's extra + B + Redis. */
    total_extra_us: Spread
  }
  /** With --before: the older commit's relayed path over the same local path, and its cost beyond it. */
  before?: { relayed_rps_vs_local: Spread; relayed_total_cpu_vs_local: Spread; total_extra_us: Spread }
}

/** One wrk process's share of a target's load. */
interface Load {
  url: string
  body: string
  connections: number
}

export async function runCluster(options: ClusterOptions): Promise<ClusterResult> {
  const { log, workDir } = options
  const children: Child[] = []
  if (BODY(LOCAL_REGION).length !== BODY(REMOTE_REGION).length) throw new Error('the two regions must have names of the same length')
  try {
    const redis = await startRedis()
    children.push(redis.child)
    const cluster = (instanceId: string) => ({ cluster: { redis_url: redis.url, instance_id: instanceId, key_prefix: 'mls-bench:' } })
    const a = await startMoonlight(workDir, { name: 'moonlight-cluster-a', config: cluster('a') })
    children.push(a)
    const b = await startMoonlight(workDir, { name: 'moonlight-cluster-b', config: cluster('b') })
    children.push(b)
    const single = await startMoonlight(workDir, { name: 'moonlight-single' })
    children.push(single)
    const { beforeRoot } = options
    const targets = CLUSTER_TARGETS.filter((target) => target !== 'relayed-before' || beforeRoot !== undefined)
    // The older commit's pair, for the same relayed load; its key prefix keeps the two clusters apart.
    const cluster0 = (instanceId: string) => ({ cluster: { redis_url: redis.url, instance_id: instanceId, key_prefix: 'mls-bench-before:' } })
    const before =
      beforeRoot === undefined
        ? []
        : [
            await startMoonlight(workDir, { name: 'moonlight-cluster-a0', root: beforeRoot, config: cluster0('a0') }),
            await startMoonlight(workDir, { name: 'moonlight-cluster-b0', root: beforeRoot, config: cluster0('b0') }),
          ]
    children.push(...before)
    const [a0, b0] = before
    // Node ids are the fleet's: unique across the cluster, so each agent gets its own prefix.
    const agents = [
      startWsAgent(a, LOCAL_REGION, 'a-held'),
      startWsAgent(b, REMOTE_REGION, 'b-held'),
      startWsAgent(single, LOCAL_REGION, 's-eu'),
      startWsAgent(single, REMOTE_REGION, 's-us'),
      ...(b0 === undefined ? [] : [startWsAgent(b0, REMOTE_REGION, 'b0-held')]),
    ]
    children.push(...agents)
    await Promise.all(agents.map((agent) => agent.waitFor(/registered 1 in/)))

    const half = Math.max(1, Math.floor(options.connections / 2))
    const other = Math.max(1, options.connections - half)
    const task = (server: MoonlightProcess, region: string, connections: number): Load => ({
      url: `${server.url}/task/request`,
      body: BODY(region),
      connections,
    })
    const loads: Record<ClusterTarget, Load[]> = {
      'relayed-before': a0 === undefined ? [] : [task(a0, REMOTE_REGION, options.connections)],
      local: [task(a, LOCAL_REGION, options.connections)],
      relayed: [task(a, REMOTE_REGION, options.connections)],
      'one-instance': [task(single, LOCAL_REGION, half), task(single, REMOTE_REGION, other)],
      'two-instances': [task(a, LOCAL_REGION, half), task(b, REMOTE_REGION, other)],
    }
    // Each path must answer 200 from the agent it is meant for before it is timed; A learns of B's
    // agent through Redis, so the relayed path may take a moment to appear.
    await expectAnswer(loads.local[0]!, 'a-held-0', 'a')
    await expectAnswer(loads.relayed[0]!, 'b-held-0', 'b')
    await expectAnswer(loads['two-instances'][1]!, 'b-held-0', 'b')
    await expectAnswer(loads['one-instance'][0]!, 's-eu-0')
    await expectAnswer(loads['one-instance'][1]!, 's-us-0')
    if (a0 !== undefined) await expectAnswer(loads['relayed-before'][0]!, 'b0-held-0', 'b0')

    // A0 and B0 are counted as A and B: each idles while the other pair works.
    const pids = {
      a: [a.pid, ...(a0 ? [a0.pid] : [])],
      b: [b.pid, ...(b0 ? [b0.pid] : [])],
      single: [single.pid],
      redis: [redis.child.pid],
      agents: agents.map((agent) => agent.pid),
    }
    const cpuNow = () => ({
      a: sumCpu(pids.a),
      b: sumCpu(pids.b),
      single: sumCpu(pids.single),
      redis: sumCpu(pids.redis),
      agents: sumCpu(pids.agents),
      wrk: reapedChildrenCpuUs(),
    })
    const relaysNow = async () => {
      let count = 0
      for (const server of [a, b, ...before]) count += await relayCount(server)
      return count
    }

    for (const target of targets) {
      log(`  warm-up ${target}`)
      await runLoads(loads[target], options.warmupS)
    }
    const runs: ClusterRun[] = []
    for (let roundNo = 1; roundNo <= options.rounds; roundNo++) {
      const order = targets.map((_, i) => targets[(i + roundNo - 1) % targets.length]!)
      for (const target of order) {
        const load1 = loadAverage()
        const relaysBefore = await relaysNow()
        const before = cpuNow()
        const boxBefore = boxJiffies()
        const startedMs = performance.now()
        const results = await runLoads(loads[target], options.durationS)
        const wallUs = (performance.now() - startedMs) * 1000
        const boxAfter = boxJiffies()
        const after = cpuNow()
        const relays = (await relaysNow()) - relaysBefore
        const requests = results.reduce((sum, result) => sum + result.requests, 0)
        const perTask = (key: keyof typeof before) => round((after[key] - before[key]) / requests)
        const cpu = {
          a: perTask('a'),
          b: perTask('b'),
          single: perTask('single'),
          redis: perTask('redis'),
          agents: perTask('agents'),
          wrk: perTask('wrk'),
          total: 0,
        }
        cpu.total = round(cpu.a + cpu.b + cpu.single + cpu.redis + cpu.agents)
        const usedUs = (Object.keys(before) as Array<keyof typeof before>).reduce((sum, key) => sum + after[key] - before[key], 0)
        const run: ClusterRun = {
          target,
          round: roundNo,
          rps: round(
            results.reduce((sum, result) => sum + result.requests / (result.duration_us / 1e6), 0),
            1,
          ),
          p50_us: Math.max(...results.map((result) => result.p50_us)),
          p99_us: Math.max(...results.map((result) => result.p99_us)),
          requests,
          errors: results.reduce((sum, r) => sum + r.connect_errors + r.read_errors + r.write_errors + r.non_2xx + r.timeouts, 0),
          cpu_us_per_task: cpu,
          relays,
          cores_used: round(usedUs / wallUs),
          box_cores_busy: round(((boxAfter.busy - boxBefore.busy) / (boxAfter.total - boxBefore.total)) * availableParallelism()),
          load1,
        }
        runs.push(run)
        log(
          `  round ${roundNo} ${target.padEnd(13)} ${run.rps.toFixed(0).padStart(7)} req/s  p50 ${ms(run.p50_us)}  p99 ${ms(run.p99_us)}  CPU/task A ${cpu.a} B ${cpu.b} S ${cpu.single} redis ${cpu.redis} agents ${cpu.agents} wrk ${cpu.wrk} µs  relays ${relays}  cores: ours ${run.cores_used}, box ${run.box_cores_busy}  errors ${run.errors}  load ${load1}`,
        )
      }
    }
    return {
      settings: {
        rounds: options.rounds,
        duration_s: options.durationS,
        connections: options.connections,
        wrk_threads: 1,
        body: BODY(LOCAL_REGION),
        redis: redis.version,
      },
      runs,
      summary: summarize(runs),
      ...derived(runs, options.rounds, beforeRoot !== undefined),
    }
  } finally {
    await Promise.all(children.reverse().map((child) => child.stop()))
  }
}

/** redis-server on a free port of 127.0.0.1: no snapshots, no append-only file, nothing left behind. */
export async function startRedis(): Promise<{ child: Child; url: string; version: string }> {
  const redisServer = Bun.which('redis-server', { PATH: `${process.env.PATH}:/usr/sbin:/sbin:/usr/bin` })
  if (!redisServer) throw new Error('redis-server is not installed: run bench/run.sh, which installs it')
  const version = /v=(\S+)/.exec(Bun.spawnSync([redisServer, '--version'], { stdout: 'pipe' }).stdout.toString())?.[1] ?? 'unknown'
  const port = freePort()
  const child = spawnChild('redis-server', [
    redisServer,
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
    '--dir',
    '/tmp',
    '--dbfilename',
    `moonlight-bench-${port}.rdb`,
  ])
  await child.waitFor(/Ready to accept connections/, 10_000)
  return { child, url: `redis://127.0.0.1:${port}`, version }
}

export function startWsAgent(server: MoonlightProcess, region: string, prefix: string): Child {
  return spawnWsAgents(`ws-agent-${prefix}`, server.wsUrl, { count: 1, region: region, prefix: prefix })
}

/** Polls until the path answers 200 from `node` (by way of `instance`, in the cluster), for up to 10 s. */
async function expectAnswer(load: Load, node: string, instance?: string): Promise<void> {
  const deadline = Date.now() + 10_000
  let last = ''
  while (Date.now() < deadline) {
    const response = await fetch(load.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${BENCH_TOKEN}` },
      body: load.body,
    })
    const text = await response.text()
    const from = response.headers.get('x-moonlight-node')
    const via = response.headers.get('x-moonlight-instance') ?? undefined
    if (response.status === 200 && text.includes('"ok":true') && from === node && via === instance) return
    last = `${response.status} from ${from ?? '?'} via ${via ?? '-'}: ${text.slice(0, 300)}`
    await Bun.sleep(100)
  }
  throw new Error(`${load.url} (${load.body}) did not answer from ${node}${instance ? ` via ${instance}` : ''} within 10 s; last: ${last}`)
}

async function relayCount(server: MoonlightProcess): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  const match = /^moonlight_cluster_relays_total (\d+)$/m.exec(text)
  if (!match) throw new Error(`${server.name} has no moonlight_cluster_relays_total in /metrics`)
  return Number(match[1])
}

function runLoads(loads: readonly Load[], durationS: number): Promise<WrkJson[]> {
  return Promise.all(loads.map((load) => wrk(load, load.connections, durationS)))
}

const CLOCK_TICKS_PER_S = 100

/** The machine's busy and total CPU time so far (all cores, in clock ticks), from /proc/stat. */
function boxJiffies(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number)
  const total = fields.reduce((sum, value) => sum + value, 0)
  const idle = fields[3]! + fields[4]!
  return { busy: total - idle, total }
}

/**
 * CPU time of this process's children that have exited and been reaped: each wrk (and the `timeout`
 * around it) adds its own when it ends, while the servers and agents, still running, do not.
 */
function reapedChildrenCpuUs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[13]) + Number(fields[14])) * 1_000_000) / CLOCK_TICKS_PER_S
}

function sumCpu(pids: readonly number[]): number {
  let total = 0
  for (const pid of pids) total += cpuTimeUs(pid)
  return total
}

function summarize(runs: readonly ClusterRun[]): Partial<Record<ClusterTarget, ClusterSummary>> {
  const summary: Partial<Record<ClusterTarget, ClusterSummary>> = {}
  for (const target of CLUSTER_TARGETS) {
    const mine = runs.filter((run) => run.target === target)
    if (mine.length === 0) continue
    const cpu = (key: keyof CpuPerTask) => round(median(mine.map((run) => run.cpu_us_per_task[key])))
    const requests = mine.reduce((sum, run) => sum + run.requests, 0)
    summary[target] = {
      rps: round(median(mine.map((run) => run.rps)), 1),
      p50_us: median(mine.map((run) => run.p50_us)),
      p99_us: median(mine.map((run) => run.p99_us)),
      cpu_us_per_task: {
        a: cpu('a'),
        b: cpu('b'),
        single: cpu('single'),
        redis: cpu('redis'),
        agents: cpu('agents'),
        wrk: cpu('wrk'),
        total: cpu('total'),
      },
      relays_per_task: round(mine.reduce((sum, run) => sum + run.relays, 0) / requests, 4),
      cores_used: round(median(mine.map((run) => run.cores_used))),
      box_cores_busy: round(median(mine.map((run) => run.box_cores_busy))),
      errors: mine.reduce((sum, run) => sum + run.errors, 0),
    }
  }
  return summary
}

function derived(runs: readonly ClusterRun[], rounds: number, withBefore: boolean): Pick<ClusterResult, 'ratios' | 'relay_cost' | 'before'> {
  const perRound = (f: (get: (target: ClusterTarget) => ClusterRun) => number, digits = 3): Spread => {
    const values: number[] = []
    for (let roundNo = 1; roundNo <= rounds; roundNo++) {
      values.push(f((target) => runs.find((run) => run.round === roundNo && run.target === target)!))
    }
    return { median: round(median(values), digits), min: round(Math.min(...values), digits), max: round(Math.max(...values), digits) }
  }
  const cpu = (run: ClusterRun) => run.cpu_us_per_task
  return {
    ratios: {
      relayed_rps_vs_local: perRound((get) => get('relayed').rps / get('local').rps),
      relayed_p50_vs_local: perRound((get) => get('relayed').p50_us / get('local').p50_us),
      relayed_p99_vs_local: perRound((get) => get('relayed').p99_us / get('local').p99_us),
      relayed_a_cpu_vs_local: perRound((get) => cpu(get('relayed')).a / cpu(get('local')).a),
      relayed_total_cpu_vs_local: perRound((get) => cpu(get('relayed')).total / cpu(get('local')).total),
      two_rps_vs_one: perRound((get) => get('two-instances').rps / get('one-instance').rps),
      two_p99_vs_one: perRound((get) => get('two-instances').p99_us / get('one-instance').p99_us),
      two_server_cpu_vs_one: perRound((get) => (cpu(get('two-instances')).a + cpu(get('two-instances')).b) / cpu(get('one-instance')).single),
    },
    relay_cost: {
      a_extra_us: perRound((get) => cpu(get('relayed')).a - cpu(get('local')).a, 1),
      b_us: perRound((get) => cpu(get('relayed')).b, 1),
      redis_us: perRound((get) => cpu(get('relayed')).redis, 1),
      total_extra_us: perRound((get) => extraUs(get('relayed'), get('local')), 1),
    },
    ...(withBefore
      ? {
          before: {
            relayed_rps_vs_local: perRound((get) => get('relayed-before').rps / get('local').rps),
            relayed_total_cpu_vs_local: perRound((get) => cpu(get('relayed-before')).total / cpu(get('local')).total),
            total_extra_us: perRound((get) => extraUs(get('relayed-before'), get('local')), 1),
          },
        }
      : {}),
  }
}

/** A relayed task's CPU beyond a local one: A's extra, B's and Redis's. */
function extraUs(relayed: ClusterRun, local: ClusterRun): number {
  const cpu = relayed.cpu_us_per_task
  return cpu.a - local.cpu_us_per_task.a + cpu.b + cpu.redis
}

const ms = (us: number) => `${(us / 1000).toFixed(2)} ms`
