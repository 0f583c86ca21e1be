/** `moonlight agent` saying what an error means: full answers, thrown statuses, exec exit codes and timeouts, retry: false. */
import { afterEach, beforeEach, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { parseConfig } from '../../../src/config/config.ts'
import { type MoonlightServer, startServer } from '../../../src/server/server.ts'
import { type CliProcess, ensureStopped, FIXTURES, startCli } from '../../support/cli.ts'
import { postTask, SEED_CONFIG, TOKEN } from '../../support/helpers.ts'

const HANDLER = join(FIXTURES, 'answering-handler.ts')

let mls: MoonlightServer
let running: CliProcess[] = []

/** Starts `moonlight agent` against the test server and waits until it has registered. */
async function agent(nodeId: string, args: string[]): Promise<CliProcess> {
  const child = startCli(['agent', '--server', mls.url, '--token', TOKEN, '--node-id', nodeId, ...args])
  running.push(child)
  await child.waitForOutput(`registered as ${nodeId}`)
  return child
}

async function clientNamed(nodeId: string): Promise<Record<string, any>> {
  const response = await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
  const { clients } = (await response.json()) as { clients: Array<Record<string, any>> }
  return clients.find((client) => client.node_id === nodeId)!
}

// Retries on: every test checks that what must not be retried is not, though another agent could take it.
beforeEach(() => {
  mls = startServer({ loaded: parseConfig({ ...SEED_CONFIG, retry_count: 3, task_timeout: 10 }, 'test'), port: 0, host: '127.0.0.1', log: () => {} })
})

afterEach(async () => {
  await Promise.all(running.map(ensureStopped))
  running = []
  await mls.stop(0)
})

describe.each([
  ['WebSocket', [] as string[]],
  ['HTTP', ['--http', '0', '--ip', '127.0.0.1']],
])('moonlight agent --handler over %s', (_name, transport) => {
  test('a handler that returns {status, headers, body} chooses the status and headers the caller gets', async () => {
    await agent('full-1', ['--region', 'eu-west-1', ...transport, '--handler', HANDLER])
    const result = await postTask(mls.url, {
      region: 'eu-west-1',
      payload: { answer: { status: 201, headers: { 'x-created': 'row-7' }, body: { id: 7 } } },
    })
    expect(result.status).toBe(201)
    expect(result.headers.get('x-created')).toBe('row-7')
    expect(result.json()).toEqual({ id: 7 })
  })

  test('a thrown error with status 404 reaches the caller as-is, is not retried and does not count against the agent', async () => {
    await agent('strict-1', ['--region', 'eu-west-1', ...transport, '--handler', HANDLER])
    await agent('strict-2', ['--region', 'eu-west-1', ...transport, '--handler', HANDLER])
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: { throwStatus: 404, message: 'no user 42' } })
    expect(result.status).toBe(404)
    expect(result.json()).toEqual({ error: 'no user 42' })
    expect(result.headers.get('x-moonlight-attempts')).toBe('1')
    const answered = await clientNamed(result.headers.get('x-moonlight-node')!)
    expect(answered).toMatchObject({ failures: 0, successes: 1, state: 'healthy' })
  })

  test('a thrown 5xx with retry: false is not retried on the other agent: 502 with the one attempt', async () => {
    await agent('half-1', ['--region', 'eu-west-1', ...transport, '--handler', HANDLER])
    await agent('half-2', ['--region', 'eu-west-1', ...transport, '--handler', HANDLER])
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: { halfDone: true } })
    expect(result.status).toBe(502)
    const { attempts } = result.json()
    expect(attempts).toHaveLength(1)
    expect(attempts[0]).toMatchObject({ kind: 'status', status: 500, reason: 'answered 500, not to be retried' })
    expect(attempts[0].body).toContain('wrote half the rows')
  })

  test('a plain handler error is still a 500 and is retried on the other agent', async () => {
    await agent('plain-1', ['--region', 'eu-west-1', ...transport, '--handler', HANDLER])
    await agent('plain-2', ['--region', 'eu-west-1', ...transport, '--handler', HANDLER])
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: { throwStatus: 503, message: 'busy' } })
    expect(result.status).toBe(502)
    const tried = result.json().attempts.map((attempt: { node_id: string }) => attempt.node_id)
    expect(tried.length).toBeGreaterThan(1)
    expect(new Set(tried)).toEqual(new Set(['plain-1', 'plain-2']))
  })
})

describe('moonlight agent --exec: exit codes and --exec-timeout', () => {
  test('exit 2 is a 400 with stderr as the message, passed to the caller and not retried', async () => {
    await agent('exec-1', ['--region', 'eu-west-1', '--exec', 'echo "field x is required" >&2; exit 2'])
    await agent('exec-2', ['--region', 'eu-west-1', '--exec', 'echo "field x is required" >&2; exit 2'])
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: {} })
    expect(result.status).toBe(400)
    expect(result.json()).toEqual({ error: 'field x is required', exit_code: 2 })
    expect(result.headers.get('x-moonlight-attempts')).toBe('1')
  })

  test('exit 0 is a 200 with stdout; any other code is a 500, retried', async () => {
    await agent('ok-1', ['--region', 'us-east-1', '--exec', 'cat'])
    expect((await postTask(mls.url, { region: 'us-east-1', payload: { n: 1 } })).json()).toEqual({ n: 1 })
    await agent('bad-1', ['--region', 'eu-west-1', '--exec', 'echo broken >&2; exit 3'])
    const failed = await postTask(mls.url, { region: 'eu-west-1', payload: {}, fallback: 'none' })
    expect(failed.status).toBe(502)
    expect(failed.json().attempts[0]).toMatchObject({ node_id: 'bad-1', status: 500 })
  })

  test('--exec-timeout kills a runaway command and what it started: a 500 naming the reason, well before task_timeout', async () => {
    await agent('slow-1', ['--region', 'eu-west-1', '--exec', 'sleep 30 | cat', '--exec-timeout', '0.5'])
    const startedMs = Date.now()
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: {}, retry: false })
    expect(Date.now() - startedMs).toBeLessThan(5000)
    expect(result.status).toBe(502)
    expect(result.json().attempts[0]).toMatchObject({ node_id: 'slow-1', status: 500 })
    expect(result.json().attempts[0].body).toContain('ran past --exec-timeout (0.5 s) and was killed')
  })

  test('--exec-timeout without --exec is a usage error', async () => {
    const child = startCli(['agent', '--server', mls.url, '--token', TOKEN, '--region', 'x', '--handler', HANDLER, '--exec-timeout', '1'])
    running.push(child)
    expect(await child.exited).toBe(2)
    expect(child.output()).toContain('--exec-timeout applies to --exec')
  })
})
