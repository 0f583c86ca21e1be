/**
 * `moonlight task`, `status`, `clients`, `config check` and the CLI's conventions against a real server.
 * Most run `main(argv, env)` in this process (runMain); those about piping, stdin or a terminal run
 * the CLI as a real process (runCli, runCliInTerminal).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkg from '../../../package.json' with { type: 'json' }
import { expectOneLine, FIXTURES, runCli, runCliInTerminal, runMain } from '../../support/cli.ts'
import { postJson, ROOT, startTestServer, startWsAgent, type TestServer, TOKEN, type WsAgent } from '../../support/helpers.ts'

let mls: TestServer
let east: WsAgent
let europe: WsAgent
let failing: WsAgent
let silent: WsAgent
const tmp = mkdtempSync(join(tmpdir(), 'mls-cli-'))

beforeAll(async () => {
  // retry_count 0: a failing agent's 5xx is not retried on the others, so each test sees one agent's answer.
  mls = startTestServer({ retry_count: 0, task_timeout: 2 })
  east = await startWsAgent(mls.wsUrl, { nodeId: 'east-1', region: 'us-east-1' })
  europe = await startWsAgent(mls.wsUrl, { nodeId: 'eu-1', region: 'eu-west-1' })
  failing = await startWsAgent(mls.wsUrl, { nodeId: 'broken-1', region: 'ap-southeast-1', answer: () => ({ status: 500, response: { error: 'disk full' } }) })
  silent = await startWsAgent(mls.wsUrl, { nodeId: 'mute-1', region: 'mars', answer: () => null })
})

afterAll(async () => {
  for (const agent of [east, europe, failing, silent]) agent?.close()
  await mls?.stop()
})

const server = () => ['--server', mls.url]
const auth = () => [...server(), '--token', TOKEN]

describe('moonlight task', () => {
  test('--async prints the id; task get [--wait] prints the answer; task get of a running task exits 3; task cancel cancels', async () => {
    const submitted = await runMain(['task', ...auth(), '--region', 'us-east-1', '--async', '--payload', '{"later": true}'])
    expect(submitted.code).toBe(0)
    const taskId = submitted.stdout.trim()
    expect(taskId).toMatch(/^\S+$/)
    const got = await runMain(['task', 'get', taskId, ...auth(), '--wait', '5'])
    expect([got.code, JSON.parse(got.stdout)]).toEqual([0, { node: 'east-1', echo: { later: true } }])

    const held = (await runMain(['task', ...auth(), '--region', 'mars', '--async', '--payload', '1'])).stdout.trim()
    const notYet = await runMain(['task', 'get', held, ...auth()])
    expect(notYet.code).toBe(3)
    expect(expectOneLine(notYet.stderr)).toMatch(/task \S+ is (queued|running); ask again later, or pass --wait S/)
    const cancelled = await runMain(['task', 'cancel', held, ...auth()])
    expect([cancelled.code, cancelled.stdout.trim()]).toEqual([0, `cancelled ${held}`])
    const afterCancel = await runMain(['task', 'get', held, ...auth()])
    expect(afterCancel.code).toBe(1)
    expect(expectOneLine(afterCancel.stderr)).toContain('was cancelled (HTTP 409)')
    const unknown = await runMain(['task', 'get', 'no-such-id', ...auth()])
    expect([unknown.code, expectOneLine(unknown.stderr)]).toEqual([1, expect.stringContaining('no task no-such-id')])
  })

  test('on a terminal a spinner shows the time waited on stderr, and is cleared; piped, there is none', async () => {
    const { code, screen } = await runCliInTerminal(['task', ...auth(), '--region', 'mars', '--payload', '1'])
    expect(code).toBe(1)
    expect(screen).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] waiting for the answer… 1\.\d s/)
    // The spinner's line is erased before the error is written.
    expect(screen).toContain('\r\x1b[K')
    expect(screen).toContain('moonlight task: no answer within task_timeout')
    const piped = await runCli(['task', ...auth(), '--region', 'mars', '--payload', '1'])
    expect(piped.code).toBe(1)
    expect(piped.stderr).not.toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]|waiting for the answer/)
    expect(piped.stderr.trim().split('\n')).toHaveLength(1)
  })

  test('--json: task --async, task cancel and config check print JSON', async () => {
    const submitted = await runMain(['task', ...auth(), '--region', 'mars', '--async', '--json', '--payload', '2'])
    const accepted = JSON.parse(submitted.stdout)
    expect(accepted).toEqual({ task_id: expect.any(String), state: 'queued', status_url: `/task/${accepted.task_id}` })
    const cancelled = await runMain(['task', 'cancel', accepted.task_id, ...auth(), '--json'])
    expect(JSON.parse(cancelled.stdout)).toMatchObject({ task_id: accepted.task_id, state: 'cancelled' })
    const file = join(tmp, 'checked.json')
    writeFileSync(file, JSON.stringify({ port: 9090, tokens: ['a-long-enough-token-1'] }))
    const config = await runMain(['config', 'check', file, '--json'])
    expect(config.code).toBe(0)
    expect(JSON.parse(config.stdout)).toMatchObject({ source: file, unknown_keys: [], config: { port: 9090, tokens: ['a-lo… (21 characters)'] } })
  })

  test('--idempotency-key: the same command twice runs once', async () => {
    const before = east.received.length
    const args = ['task', ...auth(), '--region', 'us-east-1', '--idempotency-key', `cli-${crypto.randomUUID()}`, '--payload', '{"once": 1}']
    const first = await runMain(args)
    const second = await runMain(args)
    expect([first.code, second.code, second.stdout]).toEqual([0, 0, first.stdout])
    expect(east.received.length - before).toBe(1)
  })

  test('prints the agent answer exactly as sent when piped, exit 0', async () => {
    const result = await runCli(['task', ...auth(), '--region', 'us-east-1', '--payload', '{"hello": [1, 2]}'])
    expect(result).toMatchObject({ code: 0, stderr: '' })
    expect(result.stdout).toBe(JSON.stringify({ node: 'east-1', echo: { hello: [1, 2] } }))
  })

  test('sends the payload as the text it was given: an integer beyond 2^53 keeps its digits', async () => {
    const bodies: string[] = []
    const agent = Bun.serve({
      port: 0,
      hostname: '127.0.0.1',
      fetch: async (request) => {
        bodies.push(await request.text())
        return Response.json({ ok: true })
      },
    })
    try {
      const heartbeat = await fetch(`${mls.url}/client/heartbeat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ip: '127.0.0.1', node_id: 'raw-cli', token: TOKEN, region: 'cli-raw', port: agent.port }),
      })
      expect(heartbeat.status).toBe(200)
      const result = await runMain(['task', ...auth(), '--region', 'cli-raw', '--payload', ' {"n": 12345678901234567890} '])
      expect(result.stderr).toBe('')
      expect(result.code).toBe(0)
      expect(bodies).toEqual(['{"n": 12345678901234567890}'])
    } finally {
      mls.server.registry.remove('raw-cli', 'test over')
      agent.stop(true)
    }
  })

  test('pretty-prints JSON on a terminal', async () => {
    const { code, screen } = await runCliInTerminal(['task', ...auth(), '--region', 'us-east-1', '--payload', '{"n":1}'])
    expect(code).toBe(0)
    expect(screen).toContain(`${JSON.stringify({ node: 'east-1', echo: { n: 1 } }, null, 2)}\n`)
  })

  test('reads the payload from --payload-file, from stdin, and from --payload-file -', async () => {
    const file = join(tmp, 'payload.json')
    writeFileSync(file, '{"from":"file"}')
    const fromFile = await runCli(['task', ...auth(), '--region', 'eu-west-1', '--payload-file', file])
    expect(JSON.parse(fromFile.stdout)).toEqual({ node: 'eu-1', echo: { from: 'file' } })
    const fromStdin = await runCli(['task', ...auth(), '--region', 'eu-west-1'], { stdin: '{"from":"stdin"}\n' })
    expect(JSON.parse(fromStdin.stdout)).toEqual({ node: 'eu-1', echo: { from: 'stdin' } })
    const fromDash = await runCli(['task', ...auth(), '--region', 'eu-west-1', '--payload-file', '-'], { stdin: '"dash"' })
    expect(JSON.parse(fromDash.stdout)).toEqual({ node: 'eu-1', echo: 'dash' })
  })

  test('with no payload flag and stdin a terminal, exits 2 saying how to give one', async () => {
    const { code, screen } = await runCliInTerminal(['task', ...auth()])
    expect(code).toBe(2)
    expect(screen).toContain('moonlight task: no payload: pass --payload JSON, --payload-file F, or pipe JSON on stdin')
  })

  test('takes the server and token from MLS_SERVER and MLS_TOKEN', async () => {
    const result = await runMain(['task', '--region', 'europe', '--payload', '7'], { env: { MLS_SERVER: mls.url, MLS_TOKEN: TOKEN } })
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual({ node: 'eu-1', echo: 7 })
  })

  test("an agent's error status exits 1 with the server's message on one stderr line", async () => {
    const result = await runMain(['task', ...auth(), '--region', 'ap-southeast-1', '--payload', '{}'])
    expect(result.code).toBe(1)
    expect(result.stdout).toBe('')
    const line = expectOneLine(result.stderr)
    expect(line).toStartWith('moonlight task: every attempt failed')
    expect(line).toContain('broken-1 answered 500 ({"error":"disk full"})')
    expect(line).toContain('(HTTP 502)')
  })

  test('a region with no agent exits 1 naming the region', async () => {
    // Broadcast does not climb the hierarchy, so an empty leaf region has nobody to ask.
    const result = await runMain(['task', ...auth(), '--region', 'us-west-1', '--broadcast', '--payload', '{}'])
    expect(result.code).toBe(1)
    expect(expectOneLine(result.stderr)).toMatch(/no healthy client in region "us-west-1".*\(HTTP 503\)/)
  })

  test('a refused or missing token exits 1 and says how to pass one', async () => {
    const refused = await runMain(['task', ...server(), '--token', 'not-a-real-token', '--payload', '{}'])
    expect(refused.code).toBe(1)
    expect(expectOneLine(refused.stderr)).toContain('(HTTP 401); the token given by --token or $MLS_TOKEN was refused')
    const missing = await runMain(['task', ...server(), '--payload', '{}'])
    expect(missing.code).toBe(1)
    expect(expectOneLine(missing.stderr)).toContain('pass --token or set MLS_TOKEN')
  })

  test('--timeout gives up on an agent that never answers, exit 1', async () => {
    const result = await runMain(['task', ...auth(), '--region', 'mars', '--payload', '{}', '--timeout', '0.5'])
    expect(result.code).toBe(1)
    expect(expectOneLine(result.stderr)).toBe(`moonlight task: no answer from ${mls.url} within 0.5 s`)
  })

  test('an unreachable server exits 1', async () => {
    const result = await runMain(['task', '--server', 'http://127.0.0.1:9', '--token', TOKEN, '--payload', '{}'])
    expect(result.code).toBe(1)
    expect(expectOneLine(result.stderr)).toStartWith('moonlight task: cannot reach http://127.0.0.1:9')
  })

  test('--broadcast prints every result; exit 0 when all answered', async () => {
    const result = await runMain(['task', ...auth(), '--region', 'usa', '--broadcast', '--payload', '"all"'])
    expect(result.code).toBe(0)
    const body = JSON.parse(result.stdout)
    expect(body.results).toEqual([{ node_id: 'east-1', protocol: 'ws', status: 200, response: { node: 'east-1', echo: 'all' } }])
  })

  test('--broadcast exits 1 when any agent failed, still printing the results', async () => {
    // Everything under global: three agents answer, broken-1 answers 500, mute-1 never answers (the server reports its timeout).
    const result = await runMain(['task', ...auth(), '--broadcast', '--payload', '{}'])
    expect(result.code).toBe(1)
    const body = JSON.parse(result.stdout)
    expect(body.results.map((r: { node_id: string }) => r.node_id).sort()).toEqual(['broken-1', 'east-1', 'eu-1', 'mute-1'])
    expect(expectOneLine(result.stderr)).toBe('moonlight task: 2 of 4 agents failed the broadcast')
  })

  test('bad usage exits 2 with one line', async () => {
    const cases: Array<[string[], string]> = [
      [['--payload', '{nope'], 'the payload from --payload is not valid JSON'],
      [['--payload', '1', '--payload-file', 'x.json'], 'not both'],
      [['--payload-file', join(tmp, 'missing.json')], 'cannot read --payload-file'],
      [['--payload', '1', '--timeout', 'soon'], '--timeout must be a positive number of seconds'],
      [['--payload', '1', '--server', 'ftp://example.com'], '--server must be an http(s) URL'],
      [['--payload', '1', '--frobnicate'], "Unknown option '--frobnicate'"],
      [['--payload', '1', 'extra'], 'unexpected argument "extra"'],
    ]
    for (const [args, message] of cases) {
      const result = await runMain(['task', ...auth(), ...args])
      expect({ args, code: result.code }).toEqual({ args, code: 2 })
      expect(expectOneLine(result.stderr)).toContain(message)
    }
  })

  test('task get and task cancel without an id say the id is missing, exit 2', async () => {
    for (const action of ['get', 'cancel']) {
      const result = await runMain(['task', action, ...auth()])
      expect(result.code).toBe(2)
      expect(expectOneLine(result.stderr)).toBe(`moonlight task: task ${action} needs the task id: moonlight task ${action} ID (see moonlight task --help)`)
    }
  })

  test('an empty stdin is bad usage too, exit 2 with one line', async () => {
    // A real process: with no payload flag the payload is read from its stdin, here piped empty.
    const result = await runCli(['task', ...auth()])
    expect(result.code).toBe(2)
    expect(expectOneLine(result.stderr)).toContain('the payload from stdin is empty')
  })
})

describe('moonlight status', () => {
  test('shows the server and each region with its clients as a table', async () => {
    const result = await runMain(['status', ...server()])
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/^server\s+Online \(up \d+s\) at http:\/\/127\.0\.0\.1:\d+, version /m)
    expect(result.stdout).toMatch(/^clients\s+4$/m)
    expect(result.stdout).toMatch(/^REGION\s+CLIENTS\s+ACTIVE\s+HEALTH$/m)
    expect(result.stdout).toMatch(/^us-east-1\s+1\s+1\s+ok$/m)
    expect(result.stdout).toMatch(/^eu-west-1\s+1\s+1\s+ok$/m)
  })

  test('says how many WebSocket connections there are, never "Connected (0 connections)"', async () => {
    const own = startTestServer()
    try {
      const none = await runMain(['status', '--server', own.url])
      expect(none.stdout).toMatch(/^websocket\s+enabled, no connections$/m)
      expect(none.stdout).not.toContain('Connected')
      const disabled = startTestServer({ ws: { enabled: false } })
      try {
        expect((await runMain(['status', '--server', disabled.url])).stdout).toMatch(/^websocket\s+disabled$/m)
      } finally {
        await disabled.stop()
      }
    } finally {
      await own.stop()
    }
    // The shared server has four WebSocket agents.
    expect((await runMain(['status', ...server()])).stdout).toMatch(/^websocket\s+enabled, 4 connections$/m)
  })

  test('--json prints the server status', async () => {
    const result = await runMain(['status', ...server(), '--json'])
    expect(result.code).toBe(0)
    const status = JSON.parse(result.stdout)
    expect(status).toMatchObject({ server: 'Online', clients: 4, regions: { 'us-east-1': { clients: 1, active: 1 } } })
  })

  test('an unreachable server exits 1', async () => {
    const result = await runMain(['status', '--server', 'http://127.0.0.1:9'])
    expect(result.code).toBe(1)
    expect(expectOneLine(result.stderr)).toStartWith('moonlight status: cannot reach')
  })
})

describe('moonlight healthcheck', () => {
  test('a ready server: exit 0', async () => {
    expect(await runMain(['healthcheck', ...server()])).toEqual({ code: 0, stdout: `ready: ${mls.url}\n`, stderr: '' })
  })

  test('a server that is up but not ready (joining a cluster whose Redis is unreachable) exits 1 with the reason; so does no server', async () => {
    // Nothing listens on port 9: the instance serves alone, and /readyz answers 503 until Redis is reachable.
    const member = startTestServer({ cluster: { redis_url: 'redis://127.0.0.1:9', instance_id: 'never-ready' } })
    try {
      const result = await runMain(['healthcheck', '--server', member.url])
      expect(result.code).toBe(1)
      expect(expectOneLine(result.stderr)).toMatch(/^moonlight healthcheck: not ready: .+ \(HTTP 503\)$/)
    } finally {
      await member.stop()
    }
    const unreachable = await runMain(['healthcheck', '--server', 'http://127.0.0.1:9'])
    expect(unreachable.code).toBe(1)
    expect(expectOneLine(unreachable.stderr)).toStartWith('moonlight healthcheck: cannot reach http://127.0.0.1:9')
  })
})

describe('moonlight cluster', () => {
  test('alone: says so, with this instance in the table; --json prints GET /cluster', async () => {
    const result = await runMain(['cluster', ...auth()])
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/running alone \(no cluster configured\)/)
    expect(result.stdout).toMatch(/^INSTANCE\s+ADVERTISED\s+STARTED\s+CLIENTS\s+IN-FLIGHT\s+REFRESHED$/m)
    expect(result.stdout).toMatch(/\(this one\)\s+http:\/\/127\.0\.0\.1:\d+\s/)
    const json = JSON.parse((await runMain(['cluster', ...auth(), '--json'])).stdout)
    expect(json).toMatchObject({ mode: 'alone', redis: null, instances: [{ self: true, clients: 4 }] })
  })

  test('needs a token', async () => {
    const result = await runMain(['cluster', '--server', mls.url])
    expect(result.code).toBe(2)
    expect(expectOneLine(result.stderr)).toContain('GET /cluster needs a token')
  })
})

describe('moonlight clients', () => {
  test('lists every client in a table', async () => {
    const result = await runMain(['clients', ...auth()])
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/^NODE\s+REGION\s+PROTOCOL\s+ADDRESS\s+WEIGHT\s+STATE\s+IN-FLIGHT\s+OK\s+FAILED\s+LATENCY\s+LAST SEEN$/m)
    expect(result.stdout).toMatch(/^east-1\s+us-east-1\s+ws\s+127\.0\.0\.1\s+1\s+healthy\s/m)
    expect(result.stdout).toMatch(/^eu-1\s+eu-west-1\s+ws\s/m)
  })

  test('--json prints the list', async () => {
    const result = await runMain(['clients', ...auth(), '--json'])
    const { clients } = JSON.parse(result.stdout)
    expect(clients.map((client: { node_id: string }) => client.node_id).sort()).toEqual(['broken-1', 'east-1', 'eu-1', 'mute-1'])
  })

  test('needs a token (exit 2 without, exit 1 when refused)', async () => {
    const missing = await runMain(['clients', ...server()])
    expect(missing.code).toBe(2)
    expect(expectOneLine(missing.stderr)).toContain('pass --token or set MLS_TOKEN')
    const refused = await runMain(['clients', ...server(), '--token', 'wrong-token'])
    expect(refused.code).toBe(1)
    expect(expectOneLine(refused.stderr)).toContain('(HTTP 401)')
  })
})

describe('a failing client (kept in service by the ejection cap) in status and clients', () => {
  test('is named failing, in red on a terminal (not with NO_COLOR), plain when piped', async () => {
    const own = startTestServer({ retry_count: 0, health: { failures_to_eject: 1 } })
    const lone = await startWsAgent(own.wsUrl, { nodeId: 'lone-1', region: 'eu-west-1', answer: () => ({ status: 500, response: { error: 'disk full' } }) })
    try {
      await postJson(`${own.url}/task/request`, { region: 'eu-west-1', payload: {} }, { authorization: `Bearer ${TOKEN}` })
      const target = ['--server', own.url, '--token', TOKEN]
      const clients = await runMain(['clients', ...target])
      expect(clients.stdout).toMatch(/^lone-1\s+eu-west-1\s+ws\s+127\.0\.0\.1\s+1\s+failing\s/m)
      const status = await runMain(['status', '--server', own.url])
      expect(status.stdout).toMatch(/^eu-west-1\s+1\s+1\s+failing \(1 of 1 active\)$/m)
      const RED = '\x1b[31m'
      for (const args of [
        ['clients', ...target],
        ['status', '--server', own.url],
      ]) {
        expect((await runCliInTerminal(args)).screen).toContain(`${RED}failing`)
        expect((await runCliInTerminal(args, { env: { NO_COLOR: '1' } })).screen).not.toContain(RED)
        expect((await runCli(args)).stdout).not.toContain(RED)
      }
      // The columns stay aligned around the colour codes.
      const header = (await runCliInTerminal(['clients', ...target])).screen.split('\n').find((line) => line.startsWith('NODE'))!
      const row = (await runCliInTerminal(['clients', ...target])).screen.split('\n').find((line) => line.startsWith('lone-1'))!
      expect(row.replaceAll(RED, '').replaceAll('\x1b[39m', '').indexOf(' 0 ') + 1).toBe(header.indexOf('IN-FLIGHT'))
    } finally {
      lone.close()
      await own.stop()
    }
  })
})

describe('moonlight config check', () => {
  test('a good file prints OK and the effective config with defaults filled in, tokens hidden', async () => {
    const path = join(FIXTURES, 'mls.good.json')
    const result = await runMain(['config', 'check', path])
    expect(result.code).toBe(0)
    expect(result.stdout).toStartWith(`${path}: OK\n`)
    const effective = JSON.parse(result.stdout.slice(result.stdout.indexOf('{')))
    expect(effective).toMatchObject({
      retry_count: 3,
      task_timeout: 30,
      ws: { path: '/ws', heartbeat_interval: 30 },
      region_hierarchy: { usa: 'northamerica' },
    })
    expect(result.stdout).not.toContain('supersecrettokenox0')
  })

  test('warns about unknown keys', async () => {
    const path = join(tmp, 'colour.json')
    writeFileSync(path, JSON.stringify({ colour: 'blue', ws: { shade: 1 } }))
    const result = await runMain(['config', 'check', path])
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('warning: unknown config key "colour" is ignored')
    expect(result.stdout).toContain('warning: unknown config key "ws.shade" is ignored')
  })

  test('a bad file prints each problem by key and exits 1 with one stderr line', async () => {
    const path = join(FIXTURES, 'mls.bad.json')
    const result = await runMain(['config', 'check', path])
    expect(result.code).toBe(1)
    expect(result.stdout).toContain('tokens.0: tokens must be at least 8 characters')
    expect(result.stdout).toContain('retry_count: ')
    expect(result.stdout).toContain('ws.path: must start with "/"')
    expect(expectOneLine(result.stderr)).toBe(`moonlight config check: invalid config ${path} (3 problems)`)
  })

  test('without PATH it checks the file serve would use ($MLS_CONFIG)', async () => {
    const result = await runMain(['config', 'check'], { env: { MLS_CONFIG: join(FIXTURES, 'mls.bad.json') } })
    expect(result.code).toBe(1)
    expect(result.stdout).toContain('ws.path')
  })

  test('a missing or non-JSON file exits 1 with one line', async () => {
    const missing = await runMain(['config', 'check', join(tmp, 'nowhere.json')])
    expect(missing.code).toBe(1)
    expect(expectOneLine(missing.stderr)).toContain('cannot read config')
    const notJson = join(tmp, 'not.json')
    writeFileSync(notJson, 'port = 8080')
    const broken = await runMain(['config', 'check', notJson])
    expect(broken.code).toBe(1)
    expect(expectOneLine(broken.stderr)).toContain('is not valid JSON')
  })

  test('an endless file (/dev/zero) exits 1 with one line saying it is too large', async () => {
    const result = await runMain(['config', 'check', '/dev/zero'])
    expect(result.code).toBe(1)
    expect(expectOneLine(result.stderr)).toBe('moonlight config check: config /dev/zero is too large (more than 16 MiB)')
  })

  test('a JSON syntax error names its line and column', async () => {
    const path = join(tmp, 'trailing-comma.json')
    writeFileSync(path, '{\n  "port": 8080,\n  "retry_count": 2,\n}\n')
    const result = await runMain(['config', 'check', path])
    expect(result.code).toBe(1)
    expect(expectOneLine(result.stderr)).toStartWith(`moonlight config check: config ${path} is not valid JSON at line 4, column 1: `)
  })

  test('a misspelt key is warned about with the key it is near', async () => {
    const path = join(tmp, 'misspelt.json')
    writeFileSync(path, JSON.stringify({ regoin_hierarchy: { 'us-east-1': 'usa' }, ws: { pth: '/ws' }, colour: 'blue' }))
    const result = await runMain(['config', 'check', path])
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('warning: unknown config key "regoin_hierarchy" is ignored (did you mean "region_hierarchy"?)')
    expect(result.stdout).toContain('warning: unknown config key "ws.pth" is ignored (did you mean "ws.path"?)')
    // Near nothing: no guess.
    expect(result.stdout).toContain('warning: unknown config key "colour" is ignored\n')
  })

  test('every failure of config check has the one prefix "moonlight config check:"', async () => {
    for (const path of [join(tmp, 'nowhere.json'), '/dev/zero', join(FIXTURES, 'mls.bad.json')]) {
      const result = await runMain(['config', 'check', path])
      expect(expectOneLine(result.stderr)).toStartWith('moonlight config check: ')
    }
  })

  test('an unknown action exits 2', async () => {
    const result = await runMain(['config', 'validate'])
    expect(result.code).toBe(2)
    expect(expectOneLine(result.stderr)).toContain('unknown action "validate"')
  })
})

describe('help, version and exit codes', () => {
  test('--version prints the package version, and no commit when run from the sources', async () => {
    const result = await runMain(['--version'])
    expect(result).toEqual({ code: 0, stdout: `${pkg.version} (commit unknown)\n`, stderr: '' })
  })

  test('--help lists every command; each command has its own --help', async () => {
    const help = await runMain(['--help'])
    expect(help.code).toBe(0)
    for (const name of ['serve', 'agent', 'task', 'status', 'clients', 'cluster', 'config']) expect(help.stdout).toMatch(new RegExp(`^  ${name}\\s`, 'm'))
    for (const name of ['serve', 'agent', 'task', 'status', 'clients', 'config']) {
      const own = await runMain([name, '--help'])
      expect(own.code).toBe(0)
      expect(own.stdout).toStartWith(`moonlight ${name}`)
    }
  })

  test("docs/cli.md's command table has a row for every command; serve's row and usage list --redis", async () => {
    const help = (await runMain(['--help'])).stdout
    const names = [...help.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((match) => match[1]!)
    expect(names).toContain('cluster')
    const page = readFileSync(join(ROOT, 'docs/cli.md'), 'utf8')
    const rows = page.split('\n').filter((line) => line.startsWith('| `moonlight '))
    for (const name of names) expect({ name, row: rows.some((row) => row.startsWith(`| \`moonlight ${name}`)) }).toEqual({ name, row: true })
    expect(rows.find((row) => row.startsWith('| `moonlight serve'))).toContain('--redis URL')
    expect((await runMain(['serve', '--help'])).stdout.split('\n')[0]).toContain('[--redis URL]')
  })

  test('no command or an unknown one exits 2', async () => {
    const none = await runMain([])
    expect(none.code).toBe(2)
    expect(none.stderr).toContain('Usage: moonlight <command>')
    const unknown = await runMain(['frobnicate'])
    expect(unknown.code).toBe(2)
    expect(expectOneLine(unknown.stderr)).toBe('moonlight: unknown command "frobnicate" (see moonlight --help)')
  })
})
