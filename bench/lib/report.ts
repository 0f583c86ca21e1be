/** The Markdown table of one run: the measurements and whether each target was met. */
import type { BalancerPoint } from '../balancer.ts'
import type { BroadcastResult, BroadcastServerResult } from '../broadcast.ts'
import type { ClusterResult, ClusterTarget, Spread } from '../cluster.ts'
import type { ConnectionsResult } from '../connections.ts'
import type { FetchCapPoint } from '../fetch-cap.ts'
import type { HttpPathResult, Target } from '../http-path.ts'
import { floorOf, LATENCY_MODES, type LatencyMode, type LatencyResult, type LatencyRow, type LatencyTarget } from '../latency.ts'
import type { Machine } from './machine.ts'

export interface BenchResults {
  started_at: string
  duration_s: number
  machine: Machine
  http?: HttpPathResult
  latency?: LatencyResult
  balancer?: BalancerPoint[]
  connections?: ConnectionsResult
  broadcast?: BroadcastResult
  fetch_cap?: FetchCapPoint[]
  cluster?: ClusterResult
  targets: TargetCheck[]
}

export interface TargetCheck {
  name: string
  goal: string
  measured: string
  met: boolean
}

/** Checks each target the issue sets against what this run measured. */
export function checkTargets(results: Omit<BenchResults, 'targets'>): TargetCheck[] {
  const checks: TargetCheck[] = []
  const { http, latency, balancer, connections } = results
  if (http) {
    const { ratios } = http
    checks.push({
      name: 'HTTP path throughput',
      goal: '≥ 0.8 × nginx req/s',
      measured: `${ratios.http_rps_vs_nginx.toFixed(2)} × (the text relay, same rounds: ${ratios.floor_text_rps_vs_nginx?.toFixed(2)} ×; it doing what the contract asks: ${ratios.floor_contract_rps_vs_nginx?.toFixed(2)} ×)`,
      met: ratios.http_rps_vs_nginx >= 0.8,
    })
    checks.push({
      name: 'HTTP path p99',
      goal: '≤ 1.5 × nginx p99',
      measured: `${ratios.http_p99_vs_nginx.toFixed(2)} ×`,
      met: ratios.http_p99_vs_nginx <= 1.5,
    })
    checks.push({
      name: 'WebSocket path throughput',
      goal: '≥ 1.1 × nginx HTTP req/s',
      measured: `${ratios.ws_rps_vs_nginx.toFixed(2)} × (the text relay's WebSocket path, same rounds: ${ratios.floor_text_ws_rps_vs_nginx?.toFixed(2)} ×; it doing what the contract asks: ${ratios.floor_contract_ws_rps_vs_nginx.toFixed(2)} ×)`,
      met: ratios.ws_rps_vs_nginx >= 1.1,
    })
    checks.push({
      name: `HTTP path CPU per task, ${http.settings.connections} connections`,
      goal: "≤ 1.3 × the bare text relay's",
      measured: `${ratios.http_cpu_vs_floor_text.toFixed(2)} × (the text relay doing what the contract asks: ${ratios.floor_contract_cpu_vs_floor_text?.toFixed(2)} ×)`,
      met: ratios.http_cpu_vs_floor_text <= 1.3,
    })
  }
  if (latency) checks.push(...latencyChecks(latency))
  const atScale = balancer?.find((point) => point.clients === 100_000)
  if (atScale) {
    checks.push({
      name: 'Balancer at 100 000 clients',
      goal: '≤ 1 µs per pick',
      measured: `${(atScale.ns_per_pick / 1000).toFixed(3)} µs`,
      met: atScale.ns_per_pick <= 1000,
    })
  }
  const tenThousand = connections?.steps.find((step) => step.agents === 10_000)
  if (tenThousand) {
    checks.push({
      name: 'Idle WebSocket agents at 10 000',
      goal: '≤ 4 KB RSS each',
      measured: `${(tenThousand.rss_per_agent_bytes / 1024).toFixed(2)} KB`,
      met: tenThousand.rss_per_agent_bytes <= 4096,
    })
  }
  return checks
}

const LABELS: Record<Target, string> = {
  direct: 'direct to the agent (the limit)',
  nginx: 'nginx (1 worker, keepalive pool)',
  haproxy: 'HAProxy (nbthread 1, http-reuse)',
  'moonlight-http': 'Moonlight → HTTP agent',
  'moonlight-ws': 'Moonlight → WebSocket agent',
  'before-http': 'Moonlight before the fixes → HTTP agent',
  'before-ws': 'Moonlight before the fixes → WebSocket agent',
  'floor-http': 'bare Bun relay → HTTP agent (the floor)',
  'floor-socket': 'bare Bun relay, socket pool → HTTP agent (the floor)',
  'floor-pool': "bare Bun relay, Moonlight's HttpClientPool → HTTP agent",
  'floor-transport': "bare Bun relay, Moonlight's HttpTransport → HTTP agent",
  'floor-ws': 'bare Bun relay → WebSocket agent (the floor)',
  'floor-text': 'text relay → HTTP agent (the floor: body passed through unparsed)',
  'floor-text-ws': 'text relay → WebSocket agent (the floor of the WebSocket path)',
  'floor-contract': "text relay doing what Moonlight's contract asks (token, parsed body, payload cut out, answer headers) → HTTP agent",
  'floor-contract-ws': "text relay doing what Moonlight's contract asks (the same, and the agent's message parsed) → WebSocket agent",
}

/** The latency phase's targets at one connection (the issue's are set there). */
function latencyChecks(latency: LatencyResult): TargetCheck[] {
  const one = latency.summary.one
  const checks: TargetCheck[] = []
  const nginxAdded = one.nginx?.added_us ?? Number.NaN
  for (const [target, path] of [
    ['moonlight-http', 'HTTP'],
    ['moonlight-ws', 'WebSocket'],
  ] as const) {
    const row = one[target]
    if (!row) continue
    checks.push({
      name: `One connection, ${path} path: latency added over direct`,
      goal: '≤ 2 × what nginx adds',
      measured: `${row.added_vs_nginx.toFixed(2)} × (+${us(row.added_us)} vs nginx +${us(nginxAdded)})`,
      met: row.added_vs_nginx <= 2,
    })
    checks.push({
      name: `One connection, ${path} path: p99`,
      goal: "≤ 1.5 × the bare text relay's",
      measured: `${row.p99_vs_floor.toFixed(2)} × (${us(row.p99_us)} vs ${us(one[floorOf(target)]?.p99_us ?? Number.NaN)})`,
      met: row.p99_vs_floor <= 1.5,
    })
  }
  const http = one['moonlight-http']
  if (http) {
    checks.push({
      name: 'One connection, HTTP path: CPU per task',
      goal: "≤ 1.3 × the bare text relay's",
      measured: `${http.cpu_vs_floor.toFixed(2)} × (${us(http.proxy_cpu_us_per_task)} vs ${us(one['floor-text']?.proxy_cpu_us_per_task ?? Number.NaN)})`,
      met: http.cpu_vs_floor <= 1.3,
    })
  }
  return checks
}

const LATENCY_LABELS: Record<LatencyTarget, string> = {
  direct: 'direct to the agent',
  nginx: 'nginx',
  'floor-socket': 'socket relay → HTTP agent (parses the body)',
  'floor-text': 'text relay → HTTP agent (the floor)',
  'floor-text-ws': 'text relay → WebSocket agent (the floor)',
  'moonlight-http': 'Moonlight → HTTP agent',
  'moonlight-ws': 'Moonlight → WebSocket agent',
  'before-http': 'Moonlight before → HTTP agent',
  'before-ws': 'Moonlight before → WebSocket agent',
}

function latencyMarkdown(latency: LatencyResult): string[] {
  const { settings } = latency
  const modeTitle: Record<LatencyMode, string> = {
    one: 'One connection, requests back to back (`wrk -t1 -c1`)',
    rate: `A fixed rate: ${settings.rate_per_s} requests/s paced over ${settings.rate_connections} connections`,
  }
  const lines = [
    '## Latency: one connection, and a fixed moderate rate',
    '',
    `wrk, ${settings.duration_s} s per run, ${settings.rounds} rounds, paths and modes interleaved; medians over rounds, ratios are medians of per-round ratios.${latency.before ? ` "Moonlight before" is ${latency.before}.` : ''}`,
    '',
  ]
  for (const mode of LATENCY_MODES) {
    lines.push(
      `### ${modeTitle[mode]}`,
      '',
      "| path | req/s | p50 | p99 | p99.9 | added over direct | × nginx's added | p99 × text relay's | proxy CPU / task | main thread / task | CPU × text relay's | GCs / 1000 tasks | native bytes / task | native allocations / task | JS heap kept / task | errors |",
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    )
    for (const [target, row] of Object.entries(latency.summary[mode]) as Array<[LatencyTarget, LatencyRow]>) {
      const isDirect = target === 'direct'
      const heap = row.heap
      lines.push(
        `| ${LATENCY_LABELS[target]} | ${Math.round(row.rps)} | ${us(row.p50_us)} | ${us(row.p99_us)} | ${us(row.p999_us)} | ${isDirect ? '–' : `${us(row.added_us)}`} | ${isDirect ? '–' : row.added_vs_nginx.toFixed(2)} | ${row.p99_vs_floor.toFixed(2)} | ${us(row.proxy_cpu_us_per_task)} | ${us(row.proxy_main_cpu_us_per_task)} | ${row.cpu_vs_floor.toFixed(2)} | ${heap ? heap.collections_per_1000 : '–'} | ${heap ? `${heap.native_bytes} B` : '–'} | ${heap ? heap.native_allocations : '–'} | ${heap ? `${heap.retained_bytes} B, ${heap.retained_objects} objects` : '–'} | ${row.errors} |`,
      )
    }
    lines.push('')
  }
  lines.push(
    `"added over direct" is the path's p50 less direct's p50 in the same round. The WebSocket paths are held to the text relay's WebSocket path, every other to its HTTP path. "proxy CPU / task" is user + system time of the proxy process (all threads; nginx master + worker; for direct, the agent) over the run, per task; "main thread" counts only the thread that runs JavaScript and the proxy's sockets (nginx's one thread).`,
    '',
    `The last four columns are read, for the Bun processes only, by a probe preloaded into them (bench/lib/heap-probe.ts) before and after each run. JavaScriptCore exposes neither a collection count nor the bytes allocated in its own heap, so: "GCs / 1000 tasks" counts collections, young or full, by a FinalizationRegistry sentinel re-armed each time it is collected (a lower bound; a young collection starts when the young space fills, so for the same heap size it grows with what a task allocates in the JS heap). "native bytes / task" and "native allocations / task" are the change in mimalloc's running totals, the allocator Bun uses outside the JS heap (string contents, buffers, Bun's native request, response and socket objects, the compilers' data; other threads' as mimalloc merges them): JS objects themselves are not in them. "JS heap kept / task" is the growth of the JS heap's size and cell count between forced full collections before and after the run: what stayed reachable, not what was allocated. The Moonlight process serves both its paths and the text relay both of its: each run is read on its own.`,
    '',
  )
  return lines
}

export function toMarkdown(results: BenchResults): string {
  const lines: string[] = []
  const { machine } = results
  lines.push(`# Moonlight benchmark, ${results.started_at}`, '')
  lines.push(
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memory_gib} GiB, Linux ${machine.kernel}; Bun ${machine.bun}, nginx ${machine.nginx}, HAProxy ${machine.haproxy}, wrk ${machine.wrk}. Suite took ${results.duration_s} s.`,
    '',
  )
  if (results.targets.length > 0) {
    lines.push('## Targets', '', '| target | goal | measured | met |', '|---|---|---|---|')
    for (const check of results.targets) lines.push(`| ${check.name} | ${check.goal} | ${check.measured} | ${check.met ? 'yes' : '**no**'} |`)
    lines.push('')
  }
  const { http } = results
  if (http) {
    const { settings } = http
    lines.push(
      '## 1–2. Task path: POST /task/request through each proxy to one trivial agent',
      '',
      `wrk, ${settings.wrk_threads} thread, ${settings.connections} connections, ${settings.duration_s} s per run, ${settings.rounds} rounds (targets interleaved); medians over rounds. Body: \`${settings.body}\`.`,
      '',
      '| path | req/s | p50 | p99 | proxy CPU / req | its main thread / req | at most, bound by that thread | agent CPU / req | wrk CPU / req | errors |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    )
    for (const [target, row] of Object.entries(http.summary) as Array<[Target, NonNullable<(typeof http.summary)[Target]>]>) {
      lines.push(
        `| ${LABELS[target]} | ${Math.round(row.rps)} | ${ms(row.p50_us)} | ${ms(row.p99_us)} | ${row.proxy_cpu_us_per_req} µs | ${row.proxy_main_cpu_us_per_req} µs | ${threadBound(row.proxy_main_cpu_us_per_req)} | ${row.agent_cpu_us_per_req} µs | ${row.wrk_cpu_us_per_req} µs | ${row.errors} |`,
      )
    }
    const { ratios } = http
    lines.push(
      '',
      `Ratios (median of per-round ratios): Moonlight HTTP / nginx req/s **${ratios.http_rps_vs_nginx}**, p99 **${ratios.http_p99_vs_nginx}**; ` +
        `Moonlight WebSocket / nginx req/s **${ratios.ws_rps_vs_nginx}**; Moonlight HTTP / HAProxy req/s ${ratios.http_rps_vs_haproxy}; Moonlight HTTP / direct ${ratios.http_rps_vs_direct}. ` +
        `Proxy CPU per task over nginx's: HTTP path ${ratios.http_cpu_vs_nginx}, WebSocket path ${ratios.ws_cpu_vs_nginx}; Moonlight HTTP over the text relay's (bench/agents/text-relay.ts: the body passed through unparsed, the floor) **${ratios.http_cpu_vs_floor_text}**; ` +
        `Moonlight WebSocket over the text relay's doing what the contract asks on its WebSocket path **${ratios.ws_cpu_vs_floor_contract_ws}** (that floor / nginx req/s ${ratios.floor_contract_ws_rps_vs_nginx}).`,
      '',
      ...(ratios.floor_http_rps_vs_nginx !== undefined
        ? [
            `A bare Bun relay (bench/agents/bun-relay.ts: no auth, validation, balancing, retries or stats), in the same rounds: HTTP / nginx req/s ${ratios.floor_http_rps_vs_nginx} calling the agent with fetch, ${ratios.floor_socket_rps_vs_nginx} (p99 ${ratios.floor_socket_p99_vs_nginx}) over a bare Bun.connect socket pool, ${ratios.floor_pool_rps_vs_nginx} through Moonlight's HttpClientPool, ${ratios.floor_transport_rps_vs_nginx} through its HttpTransport; WebSocket / nginx req/s ${ratios.floor_ws_rps_vs_nginx}. Moonlight HTTP / the socket-pool relay req/s ${ratios.http_rps_vs_floor_socket}: what Moonlight's own work costs.`,
            '',
            ...(http.summary.nginx ? [`0.8 × nginx's req/s is ${Math.round(0.8 * http.summary.nginx.rps)} here.`, ''] : []),
          ]
        : []),
      ...(http.before
        ? [
            `Before the fixes (${http.before}), in the same rounds: HTTP / nginx req/s ${ratios.before_http_rps_vs_nginx}, p99 ${ratios.before_http_p99_vs_nginx}; WebSocket / nginx req/s ${ratios.before_ws_rps_vs_nginx}.`,
            '',
          ]
        : []),
      '"proxy CPU / req" is user + system time of the proxy process (all its threads; nginx master + worker) over the run, per request; for "direct" it is the agent itself. "its main thread" counts only the thread that runs JavaScript and the proxy\'s own sockets (a Bun process\'s JIT and collector helpers and fetch\'s HTTP thread excluded; nginx has one thread). One thread cannot work more than a second per second, so "at most" (10⁶ / main thread µs) is the most that proxy can answer at that cost per task, whatever the rest of the box does. "wrk CPU / req" is the load generator\'s own: proxy + agent + wrk is what one task costs the box.',
      '',
    )
  }
  if (results.latency) lines.push(...latencyMarkdown(results.latency))
  if (results.balancer) {
    lines.push(
      '## 3. Weighted balancing at scale (the balancer alone)',
      '',
      '| clients | distinct weights | ns / pick | ns / pick + retry excluding it | nginx-style scan, ns / pick |',
      '|---:|---:|---:|---:|---:|',
    )
    for (const point of results.balancer) {
      lines.push(
        `| ${point.clients} | ${point.distinct_weights} | ${point.ns_per_pick} | ${point.ns_per_pick_and_retry} | ${point.reference_scan_ns_per_pick} |`,
      )
    }
    lines.push('')
  }
  if (results.connections) {
    const { connections } = results
    lines.push(
      '## 4. Idle WebSocket agents',
      '',
      `Server RSS before any agent: ${connections.baseline_rss_mb} MB. Largest step bounded by: ${connections.limit}.`,
      '',
      '| agents | time to register all | registrations / s | server RSS | RSS per agent |',
      '|---:|---:|---:|---:|---:|',
    )
    for (const step of connections.steps) {
      lines.push(
        `| ${step.agents} | ${step.register_ms} ms | ${step.registrations_per_s} | ${step.server_rss_mb} MB | ${(step.rss_per_agent_bytes / 1024).toFixed(2)} KB |`,
      )
    }
    lines.push('')
    if (connections.compare) {
      const { compare } = connections
      const floor = compare.servers.find((entry) => entry.server === 'floor')
      const names = {
        moonlight: 'Moonlight, this tree',
        before: `Moonlight at ${connections.before ?? 'before'}`,
        floor: 'the floor: a bare Bun server, one topic per socket (bench/agents/broadcast-floor.ts)',
      }
      lines.push(
        `${compare.agents} agents on each server started afresh, ${compare.rounds} round(s), the servers interleaved:`,
        '',
        '| server | RSS per idle agent (median) | each round | × the floor |',
        '|---|---:|---|---:|',
      )
      for (const entry of compare.servers) {
        lines.push(
          `| ${names[entry.server]} | ${(entry.median_bytes / 1024).toFixed(2)} KB | ${entry.rss_per_agent_bytes.map((bytes) => (bytes / 1024).toFixed(2)).join(', ')} | ${floor ? (entry.median_bytes / floor.median_bytes).toFixed(2) : '–'} |`,
        )
      }
      lines.push('')
    }
  }
  if (results.broadcast) {
    const { broadcast } = results
    lines.push(
      '## 5. Broadcast',
      '',
      `One task to ${broadcast.agents} WebSocket agents in one region, until all ${broadcast.agents} answers are in: median **${broadcast.median_ms} ms** (min ${broadcast.min_ms}, max ${broadcast.max_ms}) over ${broadcast.repeats} broadcasts, the agents in ${broadcast.agent_processes ?? 1} process(es) on the same cores. The server's own CPU per broadcast: **${broadcast.server_main_cpu_ms ?? '–'} ms** on its main thread, ${broadcast.server_cpu_ms ?? '–'} ms in all its threads.${broadcast.floor ? ` The same through a bare Bun server (bench/agents/broadcast-floor.ts: publish, parse each answer, join them), in the same run: **${broadcast.floor.median_ms} ms**, ${broadcast.floor.server_main_cpu_ms} ms on its main thread; Moonlight / floor ${(broadcast.median_ms / broadcast.floor.median_ms).toFixed(2)} × in time, ${(broadcast.server_main_cpu_ms / broadcast.floor.server_main_cpu_ms).toFixed(2)} × in main-thread CPU.` : ''}`,
      '',
    )
    const rows: Array<[string, BroadcastServerResult | undefined]> = [
      ['Moonlight, this tree', broadcast],
      [`Moonlight, ${broadcast.before_ref ?? 'before'}`, broadcast.before],
      ['bare Bun floor', broadcast.floor],
    ]
    lines.push(
      `Interleaved over ${broadcast.rounds ?? 1} round(s) of ${broadcast.repeats} broadcasts per server (CPU: medians of per-round means, per broadcast):`,
      '',
      '| server | ms per broadcast | × floor | main-thread CPU | all threads | by thread |',
      '|---|---:|---:|---:|---:|---|',
    )
    for (const [name, server] of rows) {
      if (!server) continue
      const ratio = broadcast.floor ? (server.median_ms / broadcast.floor.median_ms).toFixed(2) : '–'
      const threads = Object.entries(server.threads_ms ?? {})
        .map(([thread, ms]) => `${thread} ${ms}`)
        .join(', ')
      lines.push(`| ${name} | ${server.median_ms} | ${ratio} | ${server.server_main_cpu_ms} ms | ${server.server_cpu_ms} ms | ${threads} |`)
    }
    lines.push('')
  }
  if (results.fetch_cap) {
    lines.push(
      "## 6. Bun's fetch cap (not a target: a finding)",
      '',
      'One task to a fast agent while 300 tasks wait on an agent that takes 2 s, by the limit the Moonlight process started with:',
      '',
      '| BUN_CONFIG_MAX_HTTP_REQUESTS | fast task took |',
      '|---|---:|',
      ...results.fetch_cap.map((point) => `| ${point.bun_config_max_http_requests} | ${point.fast_task_ms} ms |`),
      '',
    )
  }
  if (results.cluster) lines.push(...clusterMarkdown(results.cluster))
  return lines.join('\n')
}

const CLUSTER_LABELS: Record<ClusterTarget, string> = {
  local: 'A → its own WebSocket agent',
  relayed: "A → B's WebSocket agent, relayed through Redis",
  'one-instance': 'one instance holding both agents (2 wrk × ½ the connections)',
  'two-instances': 'A and B, each with its own agent (1 wrk × ½ the connections each)',
  'relayed-before': "A0 → B0's WebSocket agent, relayed, on the --before commit",
}

function clusterMarkdown(cluster: ClusterResult): string[] {
  const { settings, ratios, relay_cost: cost } = cluster
  const spread = (value: Spread, unit = '') => `**${value.median}${unit}** (${value.min}–${value.max})`
  const lines = [
    '## 7. Cluster: a task relayed through Redis, and two instances against one',
    '',
    `Redis ${settings.redis} (started for the run, no persistence), instances A and B in one cluster, a standalone instance S, one trivial WebSocket agent each where the table says. wrk, ${settings.wrk_threads} thread per process, ${settings.connections} connections in all per path, ${settings.duration_s} s per run, ${settings.rounds} rounds (paths interleaved); medians over rounds. Body: \`${settings.body}\` (the other region's name has the same length).`,
    '',
    '| path | req/s | p50 | p99 | CPU / task: A | B | S | Redis | agents | all but wrk | wrk | relays / task | cores used (box busy) | errors |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for (const [target, row] of Object.entries(cluster.summary) as Array<[ClusterTarget, NonNullable<(typeof cluster.summary)[ClusterTarget]>]>) {
    const cpu = row.cpu_us_per_task
    lines.push(
      `| ${CLUSTER_LABELS[target]} | ${Math.round(row.rps)} | ${ms(row.p50_us)} | ${ms(row.p99_us)} | ${cpu.a} µs | ${cpu.b} µs | ${cpu.single} µs | ${cpu.redis} µs | ${cpu.agents} µs | ${cpu.total} µs | ${cpu.wrk} µs | ${row.relays_per_task} | ${row.cores_used} (${row.box_cores_busy}) | ${row.errors} |`,
    )
  }
  lines.push(
    '',
    'Ratios: the median of the per-round ratios, and their range over the rounds.',
    '',
    '| ratio | median (range) |',
    '|---|---:|',
    `| relayed / local, req/s | ${spread(ratios.relayed_rps_vs_local)} |`,
    `| relayed / local, p50 | ${spread(ratios.relayed_p50_vs_local)} |`,
    `| relayed / local, p99 | ${spread(ratios.relayed_p99_vs_local)} |`,
    `| relayed / local, A's CPU per task | ${spread(ratios.relayed_a_cpu_vs_local)} |`,
    `| relayed / local, CPU per task of A, B, Redis and the agents | ${spread(ratios.relayed_total_cpu_vs_local)} |`,
    `| two instances / one, req/s | ${spread(ratios.two_rps_vs_one)} |`,
    `| two instances / one, p99 | ${spread(ratios.two_p99_vs_one)} |`,
    `| two instances / one, server CPU per task (A + B over S) | ${spread(ratios.two_server_cpu_vs_one)} |`,
    '',
    `What a relayed task costs beyond a local one, in CPU per task: A ${spread(cost.a_extra_us, ' µs')} more (publishing the task, reading the reply), B ${spread(cost.b_us, ' µs')} (reading the task, the agent's socket, publishing the answer), Redis ${spread(cost.redis_us, ' µs')} (two PUBLISH, two deliveries): ${spread(cost.total_extra_us, ' µs')} in all.`,
    ...(cluster.before === undefined
      ? []
      : [
          '',
          `The --before commit's relayed path (A0 → B0, same Redis, same rounds): ${spread(cluster.before.relayed_rps_vs_local)} × local's req/s, CPU per task of all but wrk ${spread(cluster.before.relayed_total_cpu_vs_local)} × local's, ${spread(cluster.before.total_extra_us, ' µs')} beyond a local task (its A0 and B0 counted in the A and B columns).`,
        ]),
    '',
    'With two wrk processes, p50 and p99 are the higher of the two (wrk\'s summaries cannot be merged exactly). CPU is user + system time of each process (all threads) over the run, per task answered; wrk\'s is what its processes used. "relays / task" is the change in A\'s and B\'s `moonlight_cluster_relays_total` over the tasks answered (a little over 1: the tasks in flight when wrk stops are relayed, not counted). "cores used" is the CPU time of every process above, wrk included, over the wall time; "box busy" is the whole machine\'s (from /proc/stat), more when other work shares the box.',
    '',
  )
  return lines
}

const ms = (us: number) => `${(us / 1000).toFixed(2)} ms`
const us = (value: number) => `${Math.round(value)} µs`

/** The most requests per second a thread can answer when each costs it `us` µs of CPU. */
function threadBound(us: number): string {
  return us > 0 ? `${Math.round(1e6 / us)} req/s` : '–'
}
