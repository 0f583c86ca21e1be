/**
 * Bun's fetch runs at most 256 requests at once per process (BUN_CONFIG_MAX_HTTP_REQUESTS, read
 * only when the process starts); the rest queue silently. For Moonlight that means 256 tasks
 * waiting on one slow agent hold up every other agent's tasks. This measures it: 300 tasks to an
 * agent that takes 2 s, then one task to a fast agent in another region, with Moonlight started
 * with the default and with a raised limit. Runs in its own process, started by run.ts with a
 * raised limit for itself (its own 301 requests must not queue); prints one JSON line.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BENCH_TOKEN, startMoonlight } from './lib/moonlight.ts'

const SLOW_TASKS = 300
const SLOW_MS = 2000
const RAISED = '4096'

export interface FetchCapPoint {
  bun_config_max_http_requests: string
  /** Time for one task to a fast agent while SLOW_TASKS tasks wait on a slow one. */
  fast_task_ms: number
}

const slowAgent = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  fetch: async (request) => {
    await request.text()
    await Bun.sleep(SLOW_MS)
    return Response.json({ slow: true })
  },
})
const fastAgent = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  fetch: async (request) => {
    await request.text()
    return Response.json({ fast: true })
  },
})
const dir = mkdtempSync(join(tmpdir(), 'moonlight-fetch-cap-'))
const points: FetchCapPoint[] = []
try {
  for (const limit of [undefined, RAISED]) {
    const moonlight = await startMoonlight(dir, { name: 'moonlight-fetch-cap', env: { BUN_CONFIG_MAX_HTTP_REQUESTS: limit } })
    try {
      const post = (path: string, body: unknown, token?: string) =>
        fetch(`${moonlight.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: JSON.stringify(body),
        }).then((response) => response.text())
      await post('/client/heartbeat', { ip: '127.0.0.1', node_id: 'slow', token: BENCH_TOKEN, region: 'us-east-1', port: slowAgent.port })
      await post('/client/heartbeat', { ip: '127.0.0.1', node_id: 'fast', token: BENCH_TOKEN, region: 'eu-west-1', port: fastAgent.port })
      const slowTasks = Array.from({ length: SLOW_TASKS }, () => post('/task/request', { region: 'us-east-1', payload: { n: 1 } }, BENCH_TOKEN))
      await Bun.sleep(200)
      const started = performance.now()
      await post('/task/request', { region: 'eu-west-1', payload: { n: 1 } }, BENCH_TOKEN)
      points.push({ bun_config_max_http_requests: limit ?? 'unset (256)', fast_task_ms: Math.round(performance.now() - started) })
      await Promise.all(slowTasks)
    } finally {
      await moonlight.stop()
    }
  }
} finally {
  slowAgent.stop(true)
  fastAgent.stop(true)
  rmSync(dir, { recursive: true, force: true })
}
console.log(`FETCH_CAP_JSON ${JSON.stringify(points)}`)
