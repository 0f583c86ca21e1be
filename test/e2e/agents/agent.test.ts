/** `moonlight agent`: the ready-made agent as a real process, against a real server, over real sockets. */
import { afterEach, beforeEach, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseConfig } from '../../../src/config/config.ts'
import { type MoonlightServer, startServer } from '../../../src/server/server.ts'
import { type CliProcess, ensureStopped, expectOneLine, FIXTURES, runCli, startCli } from '../../support/cli.ts'
import { postJson, postTask, SEED_CONFIG, TOKEN, waitFor } from '../../support/helpers.ts'

const HANDLER = join(FIXTURES, 'agent-handler.ts')
const tmp = mkdtempSync(join(tmpdir(), 'mls-agent-'))

/** The seed config; retry_count 0 so an agent's 5xx reaches the caller's attempt list unretried. */
function start(port = 0): MoonlightServer {
  return startServer({ loaded: parseConfig({ ...SEED_CONFIG, retry_count: 0, task_timeout: 10 }, 'test'), port, host: '127.0.0.1', log: () => {} })
}

let mls: MoonlightServer
let running: CliProcess[] = []

/** Starts `moonlight agent` against the test server and waits until it has registered. */
async function agent(nodeId: string, args: string[], server = mls): Promise<CliProcess> {
  const child = startCli(['agent', '--server', server.url, '--token', TOKEN, '--node-id', nodeId, ...args])
  running.push(child)
  await child.waitForOutput(`registered as ${nodeId}`)
  return child
}

async function clients(server = mls): Promise<Array<Record<string, any>>> {
  const response = await fetch(`${server.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
  return ((await response.json()) as { clients: Array<Record<string, any>> }).clients
}

// A fresh server per test: an HTTP agent stopped by a test stays registered until client_ttl.
beforeEach(() => {
  mls = start()
})

afterEach(async () => {
  await Promise.all(running.map(ensureStopped))
  running = []
  await mls.stop(0)
})

describe('moonlight agent --exec (WebSocket)', () => {
  test('registers with its region and weight, and `cat` answers with the payload', async () => {
    await agent('cat-1', ['--region', 'us-east-1', '--weight', '5', '--exec', 'cat'])
    expect(await clients()).toMatchObject([{ node_id: 'cat-1', region: 'us-east-1', protocol: 'ws', weight: 5, state: 'healthy' }])
    const result = await postTask(mls.url, { region: 'usa', payload: { hello: ['world', 1] } })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('cat-1')
    expect(result.json()).toEqual({ hello: ['world', 1] })
  })

  test('text output becomes a JSON string; the task id is in $MLS_TASK_ID', async () => {
    await agent('text-1', ['--region', 'eu-west-1', '--exec', 'echo "task $MLS_TASK_ID done"'])
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: {} })
    expect(result.status).toBe(200)
    expect(result.json()).toBe(`task ${result.headers.get('x-task-id')} done`)
  })

  test('a failing command answers 500 with its stderr', async () => {
    await agent('fail-1', ['--region', 'eu-west-1', '--exec', 'echo "no such record" >&2; exit 3'])
    // A broadcast returns each agent's answer as-is (a single task's 5xx would be retried and summarised).
    const result = await postTask(mls.url, { region: 'eu-west-1', payload: {}, mode: 'broadcast' })
    expect(result.json().results).toEqual([{ node_id: 'fail-1', protocol: 'ws', status: 500, response: { error: 'no such record', exit_code: 3 } }])
  })

  test('runs tasks at once, never more than --concurrency', async () => {
    await agent('pool-1', ['--region', 'us-east-1', '--concurrency', '2', '--handler', HANDLER])
    const answers = await Promise.all(Array.from({ length: 6 }, () => postTask(mls.url, { region: 'us-east-1', payload: { sleepMs: 200 } })))
    const peaks = answers.map((answer) => answer.json().peak as number)
    expect(Math.max(...peaks)).toBe(2)
  })
})

describe('moonlight agent slots', () => {
  test('--concurrency is announced as its slots (max_in_flight); --no-slots announces none', async () => {
    await agent('slots-1', ['--region', 'us-east-1', '--concurrency', '3', '--exec', 'cat'])
    await agent('noslots-1', ['--region', 'us-east-1', '--concurrency', '3', '--no-slots', '--exec', 'cat'])
    const byNode = Object.fromEntries((await clients()).map((client) => [client.node_id, client]))
    expect(byNode['slots-1']!.max_in_flight).toBe(3)
    expect(byNode['noslots-1']).toBeDefined()
    expect(byNode['noslots-1']!.max_in_flight).toBeUndefined()
  })
})

describe('moonlight agent --handler', () => {
  test("the module's default export answers; a throw answers 500 with the message", async () => {
    await agent('module-1', ['--region', 'us-west-1', '--handler', HANDLER])
    const doubled = await postTask(mls.url, { region: 'us-west-1', payload: { double: 21 } })
    expect(doubled.json()).toEqual({ doubled: 42 })
    const thrown = await postTask(mls.url, { region: 'us-west-1', payload: { fail: 'bad input' }, mode: 'broadcast' })
    expect(thrown.json().results).toEqual([{ node_id: 'module-1', protocol: 'ws', status: 500, response: { error: 'bad input' } }])
  })

  test('a module without a default export, or a missing file, exits 2', async () => {
    const base = ['agent', '--server', mls.url, '--token', TOKEN, '--region', 'usa']
    const noDefault = await runCli([...base, '--handler', join(FIXTURES, 'handler-without-default.ts')])
    expect(noDefault.code).toBe(2)
    expect(expectOneLine(noDefault.stderr)).toContain('must have a default export')
    const missing = await runCli([...base, '--handler', join(tmp, 'nowhere.ts')])
    expect(missing.code).toBe(2)
    expect(expectOneLine(missing.stderr)).toContain('cannot load --handler')
  })
})

describe('moonlight agent --http (HTTP agent)', () => {
  test('serves /work, registers by heartbeat and answers tasks', async () => {
    await agent('http-1', ['--region', 'ap-southeast-1', '--http', '0', '--exec', 'cat'])
    expect(await clients()).toMatchObject([{ node_id: 'http-1', region: 'ap-southeast-1', protocol: 'http', ip: '127.0.0.1', state: 'healthy' }])
    const result = await postTask(mls.url, { region: 'asia', payload: [1, 'two', { three: 3 }] })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('http-1')
    expect(result.json()).toEqual([1, 'two', { three: 3 }])
  })

  test("its /work answers a failing command's 500 with stderr", async () => {
    const child = await agent('http-fail', ['--region', 'asia', '--http', '0', '--exec', 'echo broken >&2; exit 1'])
    const port = Number(/serving POST \/work on port (\d+)/.exec(child.output())![1])
    const answer = await postJson(`http://127.0.0.1:${port}/work`, { any: 'payload' }, { 'x-task-id': 't-1' })
    expect(answer.status).toBe(500)
    expect(answer.json()).toEqual({ error: 'broken', exit_code: 1 })
  })
})

describe('refusals and bad usage', () => {
  test('a bad token makes the agent exit 1 with one line, over WebSocket and HTTP', async () => {
    for (const mode of [[], ['--http', '0']]) {
      const result = await runCli(['agent', '--server', mls.url, '--token', 'not-the-token', '--region', 'usa', '--exec', 'cat', ...mode])
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/^moonlight agent: registration refused.*invalid token/m)
      expect(result.stderr).not.toMatch(/^\s+at /m)
    }
  })

  test('a "not now" refusal (too many clients) is retried with back-off, and the agent registers once there is room', async () => {
    mls.registry.maxClients = 1
    await postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'squatter', token: TOKEN, region: 'usa', port: 4000 })
    const child = startCli(['agent', '--server', mls.url, '--token', TOKEN, '--node-id', 'patient', '--region', 'usa', '--exec', 'cat'])
    running.push(child)
    await child.waitForOutput('too_many_clients')
    expect(child.process.exitCode).toBeNull()
    mls.registry.remove('squatter', 'test')
    await child.waitForOutput('registered as patient')
    expect((await postTask(mls.url, { region: 'usa', payload: 'finally' })).json()).toBe('finally')
  })

  test('a node id held by a live agent: the newcomer says why and retries with back-off, over WebSocket and HTTP', async () => {
    const holder = await agent('shared-id', ['--region', 'usa', '--exec', 'cat'])
    for (const mode of [[], ['--http', '0']]) {
      const child = startCli(['agent', '--server', mls.url, '--token', TOKEN, '--node-id', 'shared-id', '--region', 'usa', '--exec', 'cat', ...mode])
      running.push(child)
      await child.waitForOutput('node_id "shared-id" is in use')
      expect(child.process.exitCode).toBeNull()
      child.kill('SIGKILL')
      await child.exited
    }
    // The holder was never knocked off.
    expect((await postTask(mls.url, { region: 'usa', payload: 'mine' })).json()).toBe('mine')
    expect(holder.process.exitCode).toBeNull()
  })

  test('several servers (a cluster): a server that cannot be reached is passed over for the next, over WebSocket and HTTP', async () => {
    const listener = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
    const dead = `http://127.0.0.1:${listener.port}`
    listener.stop(true)
    for (const [nodeId, mode] of [
      ['multi-ws', []],
      ['multi-http', ['--http', '0']],
    ] as const) {
      const child = startCli(['agent', '--server', `${dead},${mls.url}`, '--token', TOKEN, '--node-id', nodeId, '--region', 'usa', '--exec', 'cat', ...mode])
      running.push(child)
      await child.waitForOutput(`registered as ${nodeId}`, 15_000)
      expect(child.output()).toMatch(/cannot (connect|reach)/)
    }
    expect((await clients()).map((client) => client.node_id).sort()).toEqual(['multi-http', 'multi-ws'])
  })

  test('missing or contradictory options exit 2', async () => {
    const base = ['agent', '--server', mls.url, '--token', TOKEN]
    const cases: Array<[string[], string]> = [
      [['--exec', 'cat'], 'pass --region'],
      [['--region', 'usa'], 'exactly one of --exec'],
      [['--region', 'usa', '--exec', 'cat', '--handler', HANDLER], 'exactly one of --exec'],
      [['--region', 'usa', '--exec', 'cat', '--concurrency', '0'], '--concurrency must be at least 1'],
      [['--region', 'usa', '--exec', 'cat', '--ip', '10.0.0.1'], 'apply to HTTP agents'],
    ]
    for (const [args, message] of cases) {
      const result = await runCli([...base, ...args])
      expect({ args, code: result.code }).toEqual({ args, code: 2 })
      expect(expectOneLine(result.stderr)).toContain(message)
    }
    const noToken = await runCli(['agent', '--server', mls.url, '--region', 'usa', '--exec', 'cat'])
    expect(noToken.code).toBe(2)
    expect(expectOneLine(noToken.stderr)).toContain('pass --token or set MLS_TOKEN')
  })
})

describe('reconnecting', () => {
  test('after the server restarts, both agents register again and serve', async () => {
    const first = start()
    const port = first.port
    const ws = await agent('comeback-ws', ['--region', 'us-east-1', '--exec', 'cat'], first)
    const http = await agent('comeback-http', ['--region', 'eu-west-1', '--http', '0', '--heartbeat', '0.2', '--exec', 'cat'], first)
    await first.stop(0)
    await ws.waitForOutput('disconnected')
    // Same port, new process state: the agents must introduce themselves again.
    const second = start(port)
    try {
      await waitFor(() => ws.count('registered as comeback-ws') === 2, 'the WebSocket agent to register again', 15_000)
      await waitFor(() => second.registry.get('comeback-http') !== undefined, 'the HTTP agent to heartbeat again', 15_000)
      expect((await postTask(second.url, { region: 'us-east-1', payload: 'ws again' })).json()).toBe('ws again')
      expect((await postTask(second.url, { region: 'eu-west-1', payload: 'http again' })).json()).toBe('http again')
    } finally {
      await Promise.all([ensureStopped(ws), ensureStopped(http)])
      await second.stop(0)
    }
  })
})

describe('SIGTERM', () => {
  for (const mode of ['WebSocket', 'HTTP']) {
    test(`${mode}: takes no new tasks, finishes the one it holds, then exits 0`, async () => {
      const nodeId = `drain-${mode.toLowerCase()}`
      const extra = mode === 'HTTP' ? ['--http', '0'] : []
      const child = await agent(nodeId, ['--region', 'us-east-1', '--handler', HANDLER, ...extra])
      const release = join(tmp, `${nodeId}.release`)
      const task = postTask(mls.url, { region: 'us-east-1', payload: { holdUntil: release } })
      await waitFor(() => existsSync(`${release}.started`), 'the agent to hold the task')
      child.kill('SIGTERM')
      await child.waitForOutput('SIGTERM: taking no new tasks, finishing 1 held task(s)')
      // Draining: the server sees weight 0 and sends it nothing new.
      await waitFor(async () => (await clients()).some((client) => client.node_id === nodeId && client.weight === 0), 'the agent to drain')
      expect((await postTask(mls.url, { region: 'us-east-1', payload: {} })).status).toBe(503)
      writeFileSync(release, '')
      const answer = await task
      expect(answer.status).toBe(200)
      expect(answer.json()).toEqual({ released: true })
      expect(await child.exited).toBe(0)
    })
  }
})

describe('SIGTERM: the server hears an HTTP agent leave', () => {
  test('each of 8 HTTP agents has told the server it drains (weight 0) by the time its process has exited', async () => {
    const nodeIds = Array.from({ length: 8 }, (_, index) => `leaving-${index}`)
    const children = await Promise.all(nodeIds.map((nodeId) => agent(nodeId, ['--region', 'us-east-1', '--http', '0', '--exec', 'cat'])))
    // Read at the moment each process is seen to have exited, long before client_ttl could expire it.
    const seenAtExit = await Promise.all(
      children.map(async (child, index) => {
        child.kill('SIGTERM')
        const code = await child.exited
        const client = mls.registry.get(nodeIds[index]!)
        return { nodeId: nodeIds[index], code, weight: client?.weight }
      }),
    )
    expect(seenAtExit).toEqual(nodeIds.map((nodeId) => ({ nodeId, code: 0, weight: 0 })))
    // Nobody left to take a task or hear a broadcast.
    expect((await postTask(mls.url, { region: 'us-east-1', payload: {} })).status).toBe(503)
  })
})

describe('SIGTERM: an HTTP agent the server cannot hear', () => {
  test('with the server gone, it says it could not tell the server it leaves, and exits 0', async () => {
    const child = await agent('unheard-gone', ['--region', 'us-east-1', '--http', '0', '--exec', 'cat'])
    await mls.stop(0)
    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
    expect(child.output()).toContain('could not tell the server this agent is leaving (cannot reach')
  })

  test('with a server that takes the goodbye and never answers, it waits 5 s at most, says so, and exits 0', async () => {
    const child = await agent('unheard-mute', ['--region', 'us-east-1', '--http', '0', '--exec', 'cat'])
    const port = mls.port
    await mls.stop(0)
    // Where the server was, something that accepts the heartbeat and never answers it.
    const mute = Bun.listen({ hostname: '127.0.0.1', port, socket: { data() {} } })
    try {
      child.kill('SIGTERM')
      expect(await child.exited).toBe(0)
      expect(child.output()).toContain('could not tell the server this agent is leaving (no answer within 5 s)')
    } finally {
      mute.stop(true)
    }
  })
})
