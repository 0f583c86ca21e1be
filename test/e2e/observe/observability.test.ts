/**
 * /metrics as Prometheus reads it: checked by Prometheus's own parser and linter (`promtool check
 * metrics`, Debian's prometheus package, installed when missing), then read for latency histograms,
 * the counters of retries, ejections and bad messages, and process figures.
 */
import { describe, expect, test } from 'bun:test'
import { ensureCommand } from '../../support/debian-packages.ts'
import { openWs, postTask, startHttpAgent, testScope } from '../../support/helpers.ts'

const { defer, server } = testScope()

/** `promtool check metrics`: exit 0 and nothing said, or the problems it found. */
function promtoolProblems(text: string): string {
  const promtool = ensureCommand('promtool', 'prometheus', "to check /metrics with Prometheus's own parser")
  const run = Bun.spawnSync([promtool, 'check', 'metrics'], { stdin: Buffer.from(text), stdout: 'pipe', stderr: 'pipe' })
  return `${run.exitCode === 0 ? '' : `exit ${run.exitCode}: `}${run.stdout.toString()}${run.stderr.toString()}`.trim()
}

/** The value of the sample `name{labels}` exactly as written (promtool has vouched for the syntax). */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `))
  if (line === undefined) throw new Error(`no sample ${series} in:\n${text}`)
  return Number(line.slice(series.length + 1))
}

describe('/metrics', () => {
  test('passes promtool check metrics, and it can fail', { timeout: 300_000 }, async () => {
    const mls = server()
    await postTask(mls.url, { region: 'us-east-1', payload: 1 })
    expect(promtoolProblems(await (await fetch(`${mls.url}/metrics`)).text())).toBe('')
    expect(promtoolProblems('# TYPE broken counter\nbroken{le="1" 2\n')).not.toBe('')
  })

  test('task and attempt histograms, retries, ejections and bad messages, process figures', async () => {
    const mls = server({ retry_count: 1, health: { failures_to_eject: 2 } })
    const good = await startHttpAgent(mls.url, { nodeId: 'good', region: 'us-east-1' })
    defer(good.stop)
    const broken = await startHttpAgent(mls.url, { nodeId: 'broken', region: 'us-east-1', work: () => new Response('no', { status: 500 }) })
    defer(broken.stop)
    for (let i = 0; i < 6; i++) expect((await postTask(mls.url, { region: 'us-east-1', payload: i })).status).toBe(200)
    // Which tasks the balancer sent to the broken agent first is its business: the counters must match what the agents saw.
    const brokenCalls = broken.received.length
    const peer = await openWs(mls.wsUrl)
    defer(() => peer.socket.close())
    peer.socket.send('not json')
    expect(await peer.next()).toMatchObject({ type: 'error', payload: { code: 'invalid_json' } })

    const text = await (await fetch(`${mls.url}/metrics`)).text()
    expect(promtoolProblems(text)).toBe('')
    expect(text).toContain('# TYPE moonlight_task_duration_seconds histogram')
    const task = (suffix: string) => `moonlight_task_duration_seconds${suffix}`
    const bounds = ['0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '+Inf']
    const buckets = bounds.map((le) => sample(text, task(`_bucket{region="us-east-1",outcome="ok",le="${le}"}`)))
    // Cumulative, ending at the count: six tasks, all answered.
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b))
    expect(buckets.at(-1)).toBe(6)
    expect(sample(text, task('_count{region="us-east-1",outcome="ok"}'))).toBe(6)
    expect(sample(text, task('_sum{region="us-east-1",outcome="ok"}'))).toBeGreaterThan(0)

    // Each call to the broken agent failed and was retried on the good one.
    expect(brokenCalls).toBeGreaterThanOrEqual(1)
    expect(sample(text, 'moonlight_task_retries_total')).toBe(brokenCalls)
    // Every attempt is timed: one per task plus each retry.
    expect(sample(text, 'moonlight_attempt_duration_seconds_count{protocol="http"}')).toBe(6 + brokenCalls)
    // Two failures in a row eject it (it never succeeds), and it stays out for ejection_time.
    expect(sample(text, 'moonlight_client_ejections_total')).toBe(brokenCalls >= 2 ? 1 : 0)
    expect(sample(text, 'moonlight_websocket_bad_messages_total{code="invalid_json"}')).toBe(1)
    expect(sample(text, 'process_resident_memory_bytes')).toBeGreaterThan(10_000_000)
    expect(sample(text, 'moonlight_event_loop_delay_seconds{stat="max"}')).toBeGreaterThanOrEqual(0)
    expect(sample(text, 'moonlight_clients{region="us-east-1",protocol="http",state="healthy"}')).toBeGreaterThanOrEqual(1)
  })

  test('a region label only for regions the config names or a client is in: made-up names fold into one series', async () => {
    // Callers name any region they like; a series per name would grow /metrics (and memory) without end.
    const mls = server()
    const agent = await startHttpAgent(mls.url, { nodeId: 'outside', region: 'lab-7' })
    defer(agent.stop)
    const before = (await (await fetch(`${mls.url}/metrics`)).text()).length
    // Each climbs to global, where the one agent takes it.
    for (let i = 0; i < 300; i++) expect((await postTask(mls.url, { region: `made-up-${i}`, payload: i })).status).toBe(200)
    expect((await postTask(mls.url, { region: 'lab-7', payload: 'x' })).status).toBe(200)
    expect((await postTask(mls.url, { region: 'us-east-1', payload: 'y', fallback: 'none' })).status).toBe(503)

    const text = await (await fetch(`${mls.url}/metrics`)).text()
    expect(promtoolProblems(text)).toBe('')
    expect(text).not.toContain('made-up-')
    expect(sample(text, 'moonlight_task_duration_seconds_count{region="(other)",outcome="ok"}')).toBe(300)
    // A region a client registered in, and one the hierarchy names, keep their own series.
    expect(sample(text, 'moonlight_task_duration_seconds_count{region="lab-7",outcome="ok"}')).toBe(1)
    expect(sample(text, 'moonlight_task_duration_seconds_count{region="us-east-1",outcome="no_client"}')).toBe(1)
    // 300 made-up regions add one series (its buckets, sum and count), not 300.
    expect(text.length - before).toBeLessThan(20_000)
  })
})
