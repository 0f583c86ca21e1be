/** Signed calls to HTTP agents: the server signs with signing_secret, `moonlight agent --http --signing-secret` and the Node lines of docs/security.md check. */
import { afterEach, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Config, parseConfig } from '../../../src/config/config.ts'
import { signatureHeaders } from '../../../src/security/signing.ts'
import { type MoonlightServer, startServer } from '../../../src/server/server.ts'
import { type CliProcess, ensureStopped, startCli } from '../../support/cli.ts'
import { postJson, postTask, ROOT, SEED_CONFIG, TOKEN } from '../../support/helpers.ts'

const SECRET = 'the-server-signing-secret'
const OTHER_SECRET = 'not-the-server-secret-at-all'
const tmp = mkdtempSync(join(tmpdir(), 'mls-signing-'))

let servers: MoonlightServer[] = []
let running: CliProcess[] = []
afterEach(async () => {
  await Promise.all(running.map(ensureStopped))
  running = []
  await Promise.all(servers.map((server) => server.stop(0)))
  servers = []
})

/** retry_count 0: the one attempt's reason reaches the caller. */
function start(extra: Partial<Config> = {}): MoonlightServer {
  const server = startServer({ loaded: parseConfig({ ...SEED_CONFIG, retry_count: 0, ...extra }, 'test'), port: 0, host: '127.0.0.1', log: () => {} })
  servers.push(server)
  return server
}

interface SigningAgent {
  child: CliProcess
  port: number
  /** How many times its handler ran. */
  runs: () => number
}

/** `moonlight agent --http 0 --signing-secret SECRET` whose handler appends a line to a file per run, then answers the payload. */
async function signingAgent(server: MoonlightServer, nodeId: string, secret: string): Promise<SigningAgent> {
  const runsFile = join(tmp, `${nodeId}.runs`)
  const child = startCli([
    'agent',
    ...['--server', server.url, '--token', TOKEN, '--node-id', nodeId, '--region', 'us-east-1', '--http', '0', '--ip', '127.0.0.1'],
    ...['--signing-secret', secret, '--exec', `echo ran >> '${runsFile}'; cat`],
  ])
  running.push(child)
  await child.waitForOutput(`registered as ${nodeId}`)
  const port = Number(/serving POST \/work on port (\d+) \(signed calls only\)/.exec(child.output())?.[1])
  const runs = () => (existsSync(runsFile) ? readFileSync(runsFile, 'utf8').split('\n').filter(Boolean).length : 0)
  return { child, port, runs }
}

/** A call straight to an agent's /work, with whatever headers the test gives. */
async function callWork(port: number, body: string, headers: Record<string, string>): Promise<{ status: number; json: any }> {
  const response = await fetch(`http://127.0.0.1:${port}/work`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
  return { status: response.status, json: await response.json() }
}

describe('signed calls to agents', () => {
  test('a server with signing_secret and an agent with the same secret: the task runs', async () => {
    const mls = start({ signing_secret: SECRET })
    const agent = await signingAgent(mls, 'same-secret', SECRET)
    const result = await postTask(mls.url, { region: 'usa', payload: { signed: ['é', 1] } })
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ signed: ['é', 1] })
    expect(agent.runs()).toBe(1)
  })

  test('with a different secret the agent refuses: the caller gets 502 whose attempt says 401, and the handler never ran', async () => {
    const mls = start({ signing_secret: SECRET })
    const agent = await signingAgent(mls, 'other-secret', OTHER_SECRET)
    const result = await postTask(mls.url, { region: 'usa', payload: { n: 1 } })
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({
      code: 'all_attempts_failed',
      attempts: [
        {
          node_id: 'other-secret',
          reason: 'answered 401: the agent refused the signed call ({"error":"refused: the signature does not match","code":"invalid_signature"})',
        },
      ],
    })
    await agent.child.waitForOutput('refused a call to /work: the signature does not match')
    expect(agent.runs()).toBe(0)
    // Counted against the agent: it refuses every call, so it should stop getting them.
    expect(mls.registry.get('other-secret')?.consecutiveFailures).toBe(1)
  })

  test('the agent runs a call only when it is signed, with its secret, within 300 s: every other call is a 401 in JSON', async () => {
    const mls = start({ signing_secret: SECRET })
    const agent = await signingAgent(mls, 'direct', SECRET)
    const body = '{"payload":"as sent"}'
    const nowS = Date.now() / 1000
    const refused = (reason: string) => ({ status: 401, json: { error: `refused: ${reason}`, code: 'invalid_signature' } })

    expect(await callWork(agent.port, body, {})).toEqual(refused('the call is not signed (x-moonlight-timestamp and x-moonlight-signature are required)'))
    expect(await callWork(agent.port, body, signatureHeaders(OTHER_SECRET, body, nowS))).toEqual(refused('the signature does not match'))
    expect(await callWork(agent.port, '{"payload":"tampered"}', signatureHeaders(SECRET, body, nowS))).toEqual(refused('the signature does not match'))
    // Signed correctly, but too long ago or too far ahead; a few seconds of margin over 300 so the test does not race the clock.
    const stale = await callWork(agent.port, body, signatureHeaders(SECRET, body, nowS - 310))
    expect(stale.status).toBe(401)
    expect(stale.json.error).toMatch(/^refused: the timestamp is 3\d\d s old \(at most 300 s allowed\)$/)
    const future = await callWork(agent.port, body, signatureHeaders(SECRET, body, nowS + 310))
    expect(future.status).toBe(401)
    expect(future.json.error).toMatch(/^refused: the timestamp is 3\d\d s ahead \(at most 300 s allowed\)$/)
    expect(agent.runs()).toBe(0)

    expect(await callWork(agent.port, body, signatureHeaders(SECRET, body, nowS - 200))).toEqual({ status: 200, json: { payload: 'as sent' } })
    expect(agent.runs()).toBe(1)
  })

  test("docs/security.md's Node lines verify a real signed call under Node, and refuse one signed with another secret", async () => {
    const page = readFileSync(join(ROOT, 'docs/security.md'), 'utf8')
    const snippet = /```js\n(import \{ createHmac, timingSafeEqual \} from 'node:crypto'[\s\S]*?)```/.exec(page)?.[1]
    if (!snippet) throw new Error('docs/security.md has no Node verification snippet')
    expect(snippet).toContain('export function verifyMoonlightSignature(')
    expect(snippet.trim().split('\n').length).toBeLessThanOrEqual(11)
    writeFileSync(join(tmp, 'verify-moonlight.mjs'), snippet)
    // A node:http agent around the snippet: it answers whether the call verified, 401 when it did not.
    writeFileSync(
      join(tmp, 'node-agent.mjs'),
      `import http from 'node:http'
import { verifyMoonlightSignature } from './verify-moonlight.mjs'
const server = http.createServer((request, response) => {
  const chunks = []
  request.on('data', (chunk) => chunks.push(chunk))
  request.on('end', () => {
    const verified = verifyMoonlightSignature(process.env.SECRET, request.headers, Buffer.concat(chunks))
    response.writeHead(verified ? 200 : 401, { 'content-type': 'application/json' })
    response.end(JSON.stringify({ verified, runtime: typeof Bun === 'undefined' ? 'node' : 'bun' }))
  })
})
server.listen(0, '127.0.0.1', () => console.log('port', server.address().port))
`,
    )
    const node = startCli([join(tmp, 'node-agent.mjs')], { command: ['node'], env: { SECRET } })
    running.push(node)
    await node.waitForOutput(/port \d+/)
    const port = Number(/port (\d+)/.exec(node.output())?.[1])

    for (const [secret, status] of [
      [SECRET, 200],
      [OTHER_SECRET, 502],
    ] as const) {
      const mls = start({ signing_secret: secret })
      const heartbeat = await postJson(`${mls.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'node-js', token: TOKEN, region: 'usa', port })
      expect(heartbeat.status).toBe(200)
      // Spacing, a non-ASCII string and a number past 2^53: the bytes signed are the bytes sent.
      const result = await postTask(mls.url, '{"region":"usa","payload":{ "text": "☃ é",  "big": 12345678901234567890 }}')
      expect({ secret, status: result.status }).toEqual({ secret, status })
      if (status === 200) expect(result.json()).toEqual({ verified: true, runtime: 'node' })
      else expect(result.json().attempts[0].reason).toBe('answered 401: the agent refused the signed call ({"verified":false,"runtime":"node"})')
    }
  })
})
