/**
 * The compiled binary, not the sources: `dist/moonlight` serves, runs agents and submits tasks,
 * started from a directory that has nothing of the project in it. Built here if missing or stale.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkg from '../../../package.json' with { type: 'json' }
import { BINARY, type CliOptions, type CliProcess, ensureBinary, ensureStopped, expectOneLine, FIXTURES, runCli, startCli } from '../../support/cli.ts'
import { type SpawnedServer, spawnServer, TOKEN, waitFor } from '../../support/helpers.ts'

const elsewhere = mkdtempSync(join(tmpdir(), 'mls-binary-'))
const GOOD_CONFIG = join(FIXTURES, 'mls.good.json')
const HANDLER = join(FIXTURES, 'agent-handler.ts')
const binary: CliOptions = { command: [BINARY], cwd: elsewhere }
const servers: SpawnedServer[] = []
const agents: CliProcess[] = []

beforeAll(ensureBinary)

afterAll(async () => {
  await Promise.all(agents.map(ensureStopped))
  for (const server of servers) {
    server.process.kill('SIGKILL')
    await server.exited
  }
})

async function serve(port = 0): Promise<SpawnedServer> {
  const server = await spawnServer(['--config', GOOD_CONFIG, '--port', String(port), '--host', '127.0.0.1'], { command: [BINARY], cwd: elsewhere })
  servers.push(server)
  if (!server.url) throw new Error(`the binary did not start:\n${server.output()}`)
  return server
}

async function agent(server: SpawnedServer, nodeId: string, args: string[]): Promise<CliProcess> {
  const child = startCli(['agent', '--server', server.url, '--token', TOKEN, '--node-id', nodeId, ...args], binary)
  agents.push(child)
  await child.waitForOutput(`registered as ${nodeId}`)
  return child
}

function moonlight(args: string[], options: CliOptions = {}) {
  return runCli(args, { ...binary, ...options })
}

describe('the binary', () => {
  test('--version prints the embedded version and the commit it was built from; --help lists the commands', async () => {
    const version = await moonlight(['--version'])
    expect(version).toEqual({ code: 0, stdout: expect.stringMatching(/^\S+ \(commit [0-9a-f]{12}(-dirty)?\)\n$/), stderr: '' })
    expect(version.stdout).toStartWith(`${pkg.version} (commit `)
    const help = await moonlight(['--help'])
    expect(help.code).toBe(0)
    for (const name of ['serve', 'agent', 'task', 'status', 'clients', 'config']) expect(help.stdout).toMatch(new RegExp(`^  ${name}\\s`, 'm'))
    expect((await moonlight(['agent', '--help'])).stdout).toContain('--exec "COMMAND"')
  })

  test('exit codes: 2 for bad usage, 1 for a failure, each with one stderr line and no stack trace', async () => {
    const usage = await moonlight(['task', '--payload', '{broken'])
    expect(usage.code).toBe(2)
    expect(expectOneLine(usage.stderr)).toStartWith('moonlight task: the payload from --payload is not valid JSON')
    const unknown = await moonlight(['launch'])
    expect(unknown.code).toBe(2)
    expectOneLine(unknown.stderr)
    const unreachable = await moonlight(['status', '--server', 'http://127.0.0.1:9'])
    expect(unreachable.code).toBe(1)
    expect(expectOneLine(unreachable.stderr)).toStartWith('moonlight status: cannot reach http://127.0.0.1:9')
  })

  test('config check: a good file exits 0 with the effective config, a bad one exits 1 naming the keys', async () => {
    const good = await moonlight(['config', 'check', GOOD_CONFIG])
    expect(good.code).toBe(0)
    expect(good.stdout).toStartWith(`${GOOD_CONFIG}: OK\n`)
    expect(good.stdout).toContain('"task_timeout": 30')
    const bad = await moonlight(['config', 'check', join(FIXTURES, 'mls.bad.json')])
    expect(bad.code).toBe(1)
    expect(bad.stdout).toContain('ws.path: must start with "/"')
    expect(bad.stdout).toContain('tokens.0: tokens must be at least 8 characters')
    expect(expectOneLine(bad.stderr)).toContain('(3 problems)')
  })
})

describe('a config the server cannot read', () => {
  test('a config directory it may not enter is an error naming the path, not the embedded default with a generated token', async () => {
    // As a container's non-root user meets a root-owned /etc/moonlight of mode 0700: the tests run as
    // root, who may enter anything, so the binary runs as nobody (setpriv) from a directory nobody may read.
    const base = mkdtempSync(join(tmpdir(), 'mls-unreadable-'))
    chmodSync(base, 0o755)
    const home = join(base, 'home')
    mkdirSync(join(home, '.config', 'moonlight'), { recursive: true, mode: 0o755 })
    writeFileSync(join(home, '.config', 'moonlight', 'mls.json'), JSON.stringify({ tokens: ['unreadable-token-0'] }))
    chmodSync(join(home, '.config', 'moonlight'), 0o700)
    copyFileSync(BINARY, join(base, 'moonlight'))
    chmodSync(join(base, 'moonlight'), 0o755)
    try {
      const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', join(base, 'moonlight')]
      const result = await runCli(['config', 'check'], { command: asNobody, cwd: base, env: { HOME: home } })
      expect(result.code).toBe(1)
      expect(expectOneLine(result.stderr)).toContain(join(home, '.config', 'moonlight', 'mls.json'))
      expect(result.stderr).toContain('permission denied')
    } finally {
      rmSync(base, { recursive: true, force: true })
    }
  })
})

describe('the binary serving, with its own agents', () => {
  let server: SpawnedServer

  beforeAll(async () => {
    server = await serve()
  })

  test('serves the docs page, the dashboard and their assets from inside itself, run from another directory', async () => {
    for (const [path, type] of [
      ['/', 'text/html'],
      ['/dashboard', 'text/html'],
      ['/static/base.css', 'text/css'],
    ] as const) {
      const response = await fetch(`${server.url}${path}`)
      expect({ path, status: response.status }).toEqual({ path, status: 200 })
      expect(response.headers.get('content-type')).toStartWith(type)
      if (type === 'text/html') expect(await response.text()).toMatch(/^<!doctype html>/i)
    }
  })

  test('serve + agent --exec cat + task returns the payload', async () => {
    await agent(server, 'bin-cat', ['--region', 'us-east-1', '--exec', 'cat'])
    const payload = { action: 'process_data', data: { message: 'Hello' } }
    const result = await moonlight(['task', '--server', server.url, '--token', TOKEN, '--region', 'us-east-1', '--payload', JSON.stringify(payload)])
    expect(result).toEqual({ code: 0, stdout: JSON.stringify(payload), stderr: '' })
  })

  test('status and clients show the agent', async () => {
    const status = await moonlight(['status', '--server', server.url])
    expect(status.code).toBe(0)
    expect(status.stdout).toMatch(/^us-east-1\s+1\s+1\s+ok$/m)
    const clients = await moonlight(['clients', '--server', server.url, '--token', TOKEN])
    expect(clients.code).toBe(0)
    expect(clients.stdout).toMatch(/^bin-cat\s+us-east-1\s+ws\s+127\.0\.0\.1\s+1\s+healthy\s/m)
    const json = JSON.parse((await moonlight(['clients', '--json'], { env: { MLS_SERVER: server.url, MLS_TOKEN: TOKEN } })).stdout)
    expect(json.clients.map((client: { node_id: string }) => client.node_id)).toContain('bin-cat')
  })

  test('a bad token: task and agent both exit 1', async () => {
    const task = await moonlight(['task', '--server', server.url, '--token', 'wrong-token', '--payload', '{}'])
    expect(task.code).toBe(1)
    expect(expectOneLine(task.stderr)).toContain('(HTTP 401)')
    const refused = await moonlight(['agent', '--server', server.url, '--token', 'wrong-token', '--region', 'usa', '--exec', 'cat'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('moonlight agent: registration refused: invalid token')
  })

  test('--handler loads a TypeScript module from disk', async () => {
    await agent(server, 'bin-module', ['--region', 'eu-west-1', '--handler', HANDLER])
    const result = await moonlight(['task', '--server', server.url, '--token', TOKEN, '--region', 'europe', '--payload', '{"double":21}'])
    expect(result).toEqual({ code: 0, stdout: '{"doubled":42}', stderr: '' })
  })

  test('--http runs an HTTP agent', async () => {
    await agent(server, 'bin-http', ['--region', 'ap-southeast-1', '--http', '0', '--exec', 'cat'])
    const clients = JSON.parse((await moonlight(['clients', '--server', server.url, '--token', TOKEN, '--json'])).stdout)
    expect(clients.clients.find((client: { node_id: string }) => client.node_id === 'bin-http')).toMatchObject({ protocol: 'http', region: 'ap-southeast-1' })
    const result = await moonlight(['task', '--server', server.url, '--token', TOKEN, '--region', 'asia'], { stdin: '["over","http"]' })
    expect(result).toEqual({ code: 0, stdout: '["over","http"]', stderr: '' })
  })

  test('an agent stops on SIGTERM with exit 0', async () => {
    const child = await agent(server, 'bin-stop', ['--region', 'us-west-1', '--exec', 'cat'])
    child.kill('SIGTERM')
    expect(await child.exited).toBe(0)
    await waitFor(async () => !(await moonlight(['clients', '--server', server.url, '--token', TOKEN])).stdout.includes('bin-stop'), 'the agent to leave')
  })
})

describe('the binary and calls to HTTP agents', () => {
  test("without BUN_CONFIG_MAX_HTTP_REQUESTS, serve says nothing of Bun's fetch limit and /metrics shows the agent pools", async () => {
    const saved = process.env.BUN_CONFIG_MAX_HTTP_REQUESTS
    delete process.env.BUN_CONFIG_MAX_HTTP_REQUESTS
    let server: SpawnedServer
    try {
      server = await serve()
    } finally {
      if (saved !== undefined) process.env.BUN_CONFIG_MAX_HTTP_REQUESTS = saved
    }
    expect(server.output()).not.toContain('Bun allows 256 simultaneous calls')
    const metrics = await (await fetch(`${server.url}/metrics`)).text()
    expect(metrics).not.toContain('moonlight_http_agent_call_limit')
    expect(metrics).toContain('moonlight_http_agent_connections{state="open"} 0')
    expect(metrics).toContain('moonlight_http_agent_calls_queued 0')
  })
})

describe('the binary agent across a server restart', () => {
  test('reconnects, registers again and serves', async () => {
    const first = await serve()
    const port = new URL(first.url).port
    const child = await agent(first, 'bin-comeback', ['--region', 'us-east-1', '--exec', 'cat'])
    first.process.kill('SIGTERM')
    expect(await first.exited).toBe(0)
    await child.waitForOutput('disconnected: closed with code 1001')
    const second = await serve(Number(port))
    await waitFor(() => child.count('registered as bin-comeback') === 2, 'the agent to register again', 15_000)
    const result = await moonlight(['task', '--server', second.url, '--token', TOKEN, '--payload', '"back again"'])
    expect(result).toEqual({ code: 0, stdout: '"back again"', stderr: '' })
  })
})
