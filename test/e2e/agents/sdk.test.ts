/**
 * moonlight-sdk as its users get it: packed with `npm pack`, installed from the tarball into an
 * empty directory, and run from there under Node (not Bun) and under Bun, against the real server.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type CliProcess, ensureStopped, FIXTURES, startCli } from '../../support/cli.ts'
import { ROOT, startTestServer, type TestServer, TOKEN, waitFor } from '../../support/helpers.ts'

const PACKAGE = join(ROOT, 'packages/sdk')
const work = mkdtempSync(join(tmpdir(), 'mls-sdk-'))
/** The empty project the tarball is installed into, with the fixture agent and caller beside it. */
const app = join(work, 'app')

/** Node 20 has a global WebSocket only behind this flag; Node 22 and later have it anyway (the flag is then a no-op). */
const NODE = ['node', '--experimental-websocket']
const BUN = [process.execPath]
// Deno from npm (the devDependency `deno`): the package reads no file and spawns nothing, so net and env suffice.
const DENO = [join(ROOT, 'node_modules/.bin/deno'), 'run', '--allow-net', '--allow-env', '--allow-read']

function run(command: string[], cwd: string): string {
  const result = Bun.spawnSync(command, { cwd, stdout: 'pipe', stderr: 'pipe', env: { ...process.env, npm_config_update_notifier: 'false' } })
  if (result.exitCode !== 0) throw new Error(`${command.join(' ')} failed (${result.exitCode}):\n${result.stdout}\n${result.stderr}`)
  return result.stdout.toString()
}

beforeAll(() => {
  // Built into a copy, so a test run never writes into the repository; prepack is the same tsc for a real publish.
  const staged = join(work, 'moonlight-sdk')
  mkdirSync(staged)
  copyFileSync(join(PACKAGE, 'package.json'), join(staged, 'package.json'))
  copyFileSync(join(PACKAGE, 'README.md'), join(staged, 'README.md'))
  run([join(ROOT, 'node_modules/.bin/tsc'), '-p', PACKAGE, '--outDir', join(staged, 'dist')], ROOT)
  run(['npm', 'pack', '--ignore-scripts', '--pack-destination', work], staged)
  const tarball = readdirSync(work).find((name) => name.endsWith('.tgz'))!
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'sdk-user', private: true, type: 'module' }))
  // No dependencies, so nothing needs the registry.
  run(['npm', 'install', join(work, tarball), '--offline', '--no-audit', '--no-fund'], app)
  for (const script of ['agent.mjs', 'caller.mjs']) copyFileSync(join(FIXTURES, 'sdk', script), join(app, script))
})

afterAll(() => rmSync(work, { recursive: true, force: true }))

let servers: TestServer[] = []
let processes: CliProcess[] = []

afterEach(async () => {
  await Promise.all(processes.map(ensureStopped))
  processes = []
  await Promise.all(servers.map((server) => server.stop()))
  servers = []
})

function server(overrides: Parameters<typeof startTestServer>[0] = {}): TestServer {
  const mls = startTestServer({ task_timeout: 10, ...overrides })
  servers.push(mls)
  return mls
}

/** The fixture agent from the installed package; resolves once it has registered. */
async function agent(runtime: string[], env: { SERVERS: string; NODE_ID: string; REGION?: string; PROTOCOL?: string }, dir = app): Promise<CliProcess> {
  const child = startCli([join(dir, 'agent.mjs')], { command: runtime, cwd: dir, env: { TOKEN, REGION: 'eu-west-1', ...env } })
  processes.push(child)
  await child.waitForOutput(`ready ${env.NODE_ID}`, 20_000)
  return child
}

/** The fixture caller: every kind of call once, and what it saw. */
async function caller(runtime: string[], mls: TestServer): Promise<Record<string, any>> {
  const child = startCli([join(app, 'caller.mjs')], { command: runtime, cwd: app, env: { SERVER: mls.url, TOKEN, REGION: 'eu-west-1' } })
  processes.push(child)
  const code = await child.exited
  if (code !== 0) throw new Error(`the caller exited ${code}:\n${child.output()}`)
  return JSON.parse(child.output().trim().split('\n').pop()!)
}

/** What the fixture caller must see from one fixture agent on `runtime`. */
function expectEveryCall(seen: Record<string, any>, nodeId: string, runtime: 'node' | 'bun' | 'deno'): void {
  expect(seen.task).toEqual({ status: 200, body: { doubled: 42, runtime }, nodeId, hasTaskId: true })
  // The handler's own 404, headers and body reach the caller as an answer, not as an error.
  expect(seen.missing).toEqual({ status: 404, body: { error: 'no user 7' }, header: 'user 7' })
  expect(seen.broadcast).toEqual({ targets: 1, answered: 1, responses: [{ echo: { echo: 1 } }] })
  expect(seen.async).toEqual({ sameId: true, state: 'done', response: { doubled: 10, runtime }, resultStatus: 200, resultBody: { doubled: 10, runtime } })
  expect(seen.unauthorized).toMatchObject({ name: 'MoonlightError', status: 401, code: 'unauthorized' })
  expect(seen.unknownTask).toMatchObject({ status: 404, code: 'unknown_task', details: { task_id: 'no-such-task' } })
  // A thrown 503 with retry: false is tried once (retry_count is 3), and the server says so with its code.
  expect(seen.noRetry).toMatchObject({ status: 502, code: 'all_attempts_failed', details: { attempts: [{ node_id: nodeId, status: 503 }] } })
}

describe('moonlight-sdk, installed from its tarball', () => {
  test('the package holds built JavaScript and declarations, and no dependencies', async () => {
    const installed = join(app, 'node_modules/moonlight-sdk')
    const manifest = await Bun.file(join(installed, 'package.json')).json()
    expect(manifest.dependencies).toBeUndefined()
    const files = readdirSync(join(installed, 'dist'))
    expect(files).toContain('index.js')
    expect(files).toContain('index.d.ts')
    expect(files.filter((name) => name.endsWith('.ts') && !name.endsWith('.d.ts'))).toEqual([])
    expect(readdirSync(join(app, 'node_modules')).filter((name) => !name.startsWith('.'))).toEqual(['moonlight-sdk'])
  })

  test('under Node: a WebSocket agent answers a caller, every call and error', async () => {
    const mls = server()
    await agent(NODE, { SERVERS: mls.url, NODE_ID: 'node-ws' })
    expectEveryCall(await caller(NODE, mls), 'node-ws', 'node')
  })

  test('under Deno: a WebSocket agent and an HTTP agent answer a caller, every call and error', async () => {
    const mls = server()
    await agent(DENO, { SERVERS: mls.url, NODE_ID: 'deno-ws' })
    expectEveryCall(await caller(DENO, mls), 'deno-ws', 'deno')
    const other = server()
    await agent(DENO, { SERVERS: other.url, NODE_ID: 'deno-http', PROTOCOL: 'http' })
    expectEveryCall(await caller(DENO, other), 'deno-http', 'deno')
  }, 60_000)

  test('under Node without a global WebSocket, the ws package is used when the app has it, and its absence is said plainly', async () => {
    // An app that installed ws beside the SDK (ws from this repository's devDependencies: no registry needed).
    const withWs = join(work, 'app-with-ws')
    mkdirSync(withWs)
    writeFileSync(join(withWs, 'package.json'), JSON.stringify({ name: 'sdk-user-ws', private: true, type: 'module' }))
    const tarball = readdirSync(work).find((name) => name.endsWith('.tgz'))!
    run(['npm', 'install', join(work, tarball), join(ROOT, 'node_modules/ws'), '--offline', '--no-audit', '--no-fund'], withWs)
    copyFileSync(join(FIXTURES, 'sdk', 'agent.mjs'), join(withWs, 'agent.mjs'))
    // --no-experimental-websocket: no global WebSocket, whichever Node this is (22+ has one by default).
    const bareNode = ['node', '--no-experimental-websocket']
    const mls = server()
    await agent(bareNode, { SERVERS: mls.url, NODE_ID: 'node-ws-package' }, withWs)
    expectEveryCall(await caller(bareNode, mls), 'node-ws-package', 'node')
    // Without ws (the plain app): the agent says what to do instead of hanging.
    const child = startCli([join(app, 'agent.mjs')], { command: bareNode, cwd: app, env: { TOKEN, REGION: 'eu-west-1', SERVERS: mls.url, NODE_ID: 'no-ws' } })
    processes.push(child)
    await child.waitForOutput('no WebSocket here', 20_000)
  })

  test('under Node: an HTTP agent (POST /work on node:http, heartbeats) answers a caller', async () => {
    const mls = server()
    await agent(['node'], { SERVERS: mls.url, NODE_ID: 'node-http', PROTOCOL: 'http' })
    const [client] = (await (await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()).clients
    expect(client).toMatchObject({ node_id: 'node-http', protocol: 'http', weight: 2 })
    expectEveryCall(await caller(['node'], mls), 'node-http', 'node')
  })

  test('under Bun: a WebSocket agent and an HTTP agent answer a caller', async () => {
    const mls = server()
    const ws = await agent(BUN, { SERVERS: mls.url, NODE_ID: 'bun-ws' })
    expectEveryCall(await caller(BUN, mls), 'bun-ws', 'bun')
    ws.kill('SIGKILL')
    await ws.exited
    const other = server()
    await agent(BUN, { SERVERS: other.url, NODE_ID: 'bun-http', PROTOCOL: 'http' })
    expectEveryCall(await caller(BUN, other), 'bun-http', 'bun')
  })
})

describe('createAgent', () => {
  test('starts on the second server when the first is down', async () => {
    // A port that was just free: nothing listens there.
    const gone = Bun.serve({ port: 0, fetch: () => new Response() })
    const deadUrl = gone.url.origin
    await gone.stop(true)
    const second = server()
    const child = await agent(NODE, { SERVERS: `${deadUrl},${second.url}`, NODE_ID: 'roamer' })
    expect(child.output()).toContain('cannot connect')
    expect(child.output()).toContain(`registered as roamer in eu-west-1 (weight 2) at ${second.wsUrl}`)
    const answer = await fetch(`${second.url}/task/request`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ region: 'eu-west-1', payload: { double: 4 } }),
    })
    expect(await answer.json()).toEqual({ doubled: 8, runtime: 'node' })
  })

  for (const protocol of ['ws', 'http']) {
    test(`(${protocol}) moves to the next server when its own goes away`, async () => {
      // An HTTP agent notices at its next heartbeat: a third of client_ttl, so 1 s here.
      const [first, second] = [server({ client_ttl: 3 }), server({ client_ttl: 3 })]
      const child = await agent(NODE, { SERVERS: `${first.url},${second.url}`, NODE_ID: `mover-${protocol}`, PROTOCOL: protocol })
      expect(child.output()).toContain(`at ${protocol === 'ws' ? first.wsUrl : first.url}`)
      await first.stop()
      await child.waitForOutput(`registered as mover-${protocol} in eu-west-1 ${protocol === 'ws' ? `(weight 2) at ${second.wsUrl}` : `at ${second.url}`}`)
    })

    test(`(${protocol}) the handler gets the caller's traceparent and tracestate`, async () => {
      const mls = server()
      await agent(NODE, { SERVERS: mls.url, NODE_ID: `trace-${protocol}`, PROTOCOL: protocol })
      const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
      const traced = await fetch(`${mls.url}/task/request`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', traceparent, tracestate: 'vendor=1' },
        body: JSON.stringify({ region: 'eu-west-1', payload: { trace: true } }),
      })
      expect(await traced.json()).toEqual({ traceparent, tracestate: 'vendor=1' })
    })

    test(`(${protocol}) a cancel aborts the handler's signal`, async () => {
      const mls = server()
      const child = await agent(NODE, { SERVERS: mls.url, NODE_ID: `cancel-${protocol}`, PROTOCOL: protocol })
      const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }
      const accepted = await fetch(`${mls.url}/task/request`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ region: 'eu-west-1', payload: { hold: true }, mode: 'async' }),
      })
      const { task_id: taskId } = (await accepted.json()) as { task_id: string }
      await child.waitForOutput(`holding ${taskId}`)
      const cancelled = await fetch(`${mls.url}/task/${taskId}`, { method: 'DELETE', headers })
      expect(cancelled.status).toBe(200)
      await child.waitForOutput(`aborted ${taskId}`)
    })
  }

  test('stop drains: weight 0 at once, the task in hand is answered, then it ends', async () => {
    const mls = server()
    const child = await agent(NODE, { SERVERS: mls.url, NODE_ID: 'drainer' })
    const answer = fetch(`${mls.url}/task/request`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ region: 'eu-west-1', payload: { hold: true, releaseMs: 1500 } }),
    })
    await child.waitForOutput('holding ')
    child.kill('SIGTERM')
    await child.waitForOutput('stopping with 1 held')
    const weightOf = async () => {
      const { clients } = await (await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()
      return clients[0]?.weight
    }
    await waitFor(async () => (await weightOf()) === 0, 'weight 0 while the task is held')
    const response = await answer
    expect(response.status).toBe(200)
    expect((await response.json()).released).toBe(response.headers.get('x-task-id')!)
    expect(await child.exited).toBe(0)
    expect(child.output()).toContain('drained')
  })
})
