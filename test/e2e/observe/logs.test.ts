/**
 * The server's log as an operator reads it: text lines with a timestamp and a level, or one JSON
 * object per line; log.level filters; log.access gives one line per task; no token, password or
 * payload in any line. And GET /readyz.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { postTask, SEED_CONFIG, type SpawnedServer, spawnServer, startCli, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'
import { startRedis } from '../../support/redis.ts'

const { defer } = testScope()
const dir = mkdtempSync(join(tmpdir(), 'mls-logs-'))
const SECRET_PAYLOAD = 'the-secret-payload-4711'

async function serve(extra: Record<string, unknown>): Promise<SpawnedServer> {
  const path = join(dir, `${crypto.randomUUID()}.json`)
  writeFileSync(path, JSON.stringify({ ...SEED_CONFIG, html: { ...SEED_CONFIG.html, enabled: false }, ...extra }))
  const child = await spawnServer(['--config', path, '--port', '0', '--host', '127.0.0.1'])
  defer(async () => {
    child.process.kill('SIGKILL')
    await child.exited
  })
  if (!child.url) throw new Error(`did not start:\n${child.output()}`)
  return child
}

/** Runs one task through a real agent, so the log has joins and an access line to show. */
async function runTask(child: SpawnedServer): Promise<string> {
  const agent = await startHttpAgent(child.url, { nodeId: 'logged-agent', region: 'us-east-1' })
  defer(agent.stop)
  const answer = await postTask(child.url, { region: 'us-east-1', payload: { secret: SECRET_PAYLOAD } })
  expect(answer.status).toBe(200)
  return answer.headers.get('x-task-id')!
}

describe('log.format', () => {
  test('text: each line starts with an ISO timestamp and its level; the access line names the task, not its payload or token', async () => {
    const child = await serve({ log: { access: true } })
    const taskId = await runTask(child)
    await waitFor(() => child.output().includes(`task ${taskId}`), 'the access line')
    const lines = child
      .output()
      .trim()
      .split('\n')
      .filter((line) => line.includes('[mls]') && !line.includes('[mls]   '))
    for (const line of lines) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO |WARN |ERROR|DEBUG) \[mls\] /)
    const access = lines.find((line) => line.includes(`task ${taskId}`))!
    expect(access).toMatch(
      new RegExp(
        `INFO  \\[mls\\] task ${taskId} single us-east-1 → logged-agent: 200 in [\\d.]+ ms, 1 attempt .*node_id=logged-agent.*status=200.*attempts=1.*duration_ms=[\\d.]+`,
      ),
    )
    expect(child.output()).not.toContain(SECRET_PAYLOAD)
    expect(child.output()).not.toContain(TOKEN)
  })

  test('json: one object per line with time, level and msg, fields beside; warn and above only with log.level warn', async () => {
    const child = await serve({ log: { format: 'json', access: true } })
    const taskId = await runTask(child)
    await waitFor(() => child.output().includes(taskId), 'the access line')
    const records = child
      .output()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    for (const record of records) {
      expect(Object.keys(record).slice(0, 3)).toEqual(['time', 'level', 'msg'])
      expect(Number.isNaN(Date.parse(record.time as string))).toBe(false)
    }
    expect(records.find((record) => record.task_id === taskId)).toMatchObject({
      level: 'info',
      region: 'us-east-1',
      node_id: 'logged-agent',
      status: 200,
      attempts: 1,
    })
    expect(records.find((record) => String(record.msg).includes('joined'))).toMatchObject({ node_id: 'logged-agent', region: 'us-east-1', protocol: 'http' })
    expect(child.output()).not.toContain(SECRET_PAYLOAD)
    expect(child.output()).not.toContain(TOKEN)

    // With log.level warn not even "listening on" is written: the server is found on a port chosen here.
    const probe = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response() })
    const port = probe.port!
    probe.stop(true)
    const path = join(dir, `${crypto.randomUUID()}.json`)
    writeFileSync(path, JSON.stringify({ ...SEED_CONFIG, html: { ...SEED_CONFIG.html, enabled: false }, log: { format: 'json', level: 'warn', access: true } }))
    const quiet = startCli(['serve', '--config', path, '--port', String(port), '--host', '127.0.0.1'])
    defer(async () => {
      quiet.kill('SIGKILL')
      await quiet.exited
    })
    const url = `http://127.0.0.1:${port}`
    await waitFor(async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200, 'the quiet server is up')
    await runTask({ url } as SpawnedServer)
    await Bun.sleep(200)
    expect(quiet.output().trim()).toBe('')
  })

  test('a Redis password never appears in a log line', async () => {
    const redis = await startRedis({ password: 'redis-pass-0042' })
    defer(redis.stop)
    const child = await serve({ cluster: { redis_url: redis.url, instance_id: 'logged' } })
    await redis.stop()
    await waitFor(() => child.output().includes('lost the connection'), 'the lost connection logged', 10_000)
    expect(child.output()).not.toContain('redis-pass-0042')
  }, 20_000)
})

describe('log.access for a broadcast', () => {
  test('says how many clients answered, not "no client"; "no client" only when there was none', async () => {
    const child = await serve({ log: { access: true } })
    const good = await startHttpAgent(child.url, { nodeId: 'answers', region: 'us-east-1' })
    const gone = await startHttpAgent(child.url, { nodeId: 'gone', region: 'us-east-1' })
    defer(good.stop)
    // Still registered, but nothing listens: its part fails unanswered.
    gone.stop()
    const some = await postTask(child.url, { region: 'us-east-1', mode: 'broadcast', payload: {} })
    const someId = some.headers.get('x-task-id')!
    const none = await postTask(child.url, { region: 'eu-west-1', mode: 'broadcast', payload: {} })
    const noneId = none.headers.get('x-task-id')!
    await waitFor(() => child.output().includes(`task ${someId}`) && child.output().includes(`task ${noneId}`), 'the access lines')
    const line = (taskId: string) =>
      child
        .output()
        .split('\n')
        .find((each) => each.includes(`task ${taskId}`))!
    expect(line(someId)).toMatch(new RegExp(`\\[mls\\] task ${someId} broadcast us-east-1 → 1 of 2 answered: 200 in [\\d.]+ ms, 2 attempts .*answered=1`))
    expect(line(noneId)).toMatch(new RegExp(`\\[mls\\] task ${noneId} broadcast eu-west-1 → no client: 503 in [\\d.]+ ms, 0 attempts`))
  })
})

describe('GET /readyz', () => {
  test('alone: 200 {"ready":true}; in a cluster with Redis gone: 503 not_ready with the reason, and 200 again once it is back', async () => {
    const alone = await serve({})
    expect(await (await fetch(`${alone.url}/readyz`)).json()).toEqual({ ready: true })

    const redis = await startRedis()
    defer(redis.stop)
    const member = await serve({ cluster: { redis_url: redis.url, instance_id: 'ready-check' } })
    expect((await fetch(`${member.url}/readyz`)).status).toBe(200)
    await redis.kill()
    await waitFor(async () => (await fetch(`${member.url}/readyz`)).status === 503, '/readyz says 503', 10_000)
    const refused = await (await fetch(`${member.url}/readyz`)).json()
    expect(refused).toMatchObject({ code: 'not_ready', reason: expect.stringContaining('Redis') })
    // /healthz stays liveness: the process is up.
    expect((await fetch(`${member.url}/healthz`)).status).toBe(200)
    await redis.restart()
    await waitFor(async () => (await fetch(`${member.url}/readyz`)).status === 200, '/readyz back to 200', 15_000)
  }, 40_000)
})

describe('a caller that goes away', () => {
  test('a task whose body stalls until the connection is timed out is no server error: nothing logged as unhandled', async () => {
    const child = await serve({})
    const { port } = new URL(child.url)
    // Half a body, then silence: Bun closes the connection after its 10 s idle timeout, failing the body's read.
    const socket = connect(Number(port), '127.0.0.1')
    defer(() => socket.destroy())
    socket.on('error', () => {})
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    socket.write(
      `POST /task/request HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 20000\r\n\r\n{"region":"us-east-1","payload":"`,
    )
    await closed
    // The server is still answering, and what it logged for the read is not an error of its own.
    expect((await fetch(`${child.url}/healthz`)).status).toBe(200)
    expect(child.output()).not.toContain('ERROR')
    expect(child.output()).not.toContain('unhandled error')
  })
})
