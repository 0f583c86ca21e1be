/** HTTP agents served over HTTPS: `"scheme": "https"` in the heartbeat, verified against the system's CAs or `agents.ca`. */
import { afterEach, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { parseConfig } from '../../../src/config/config.ts'
import { type MoonlightServer, startServer } from '../../../src/server/server.ts'
import { makeTestCa } from '../../support/certificates.ts'
import { type CliProcess, ensureStopped, expectOneLine, runCli, startCli } from '../../support/cli.ts'
import { postJson, postTask, SEED_CONFIG, TOKEN } from '../../support/helpers.ts'

const ca = makeTestCa()
const agentCertificate = ca.issue('agent-one')

let servers: MoonlightServer[] = []
let running: CliProcess[] = []
afterEach(async () => {
  await Promise.all(running.map(ensureStopped))
  running = []
  await Promise.all(servers.map((server) => server.stop(0)))
  servers = []
})

/** The seed config plus `extra`; retry_count 0, so the one attempt's reason reaches the caller. */
function loaded(extra: Record<string, unknown> = {}) {
  return parseConfig({ ...SEED_CONFIG, retry_count: 0, ...extra }, 'test')
}

function start(extra: Record<string, unknown> = {}): MoonlightServer {
  const server = startServer({ loaded: loaded(extra), port: 0, host: '127.0.0.1', log: () => {} })
  servers.push(server)
  return server
}

/** `moonlight agent --http 0 --tls-cert … --tls-key …` registered with `server`; it answers each payload with itself (`cat`). */
async function httpsAgent(server: MoonlightServer, nodeId: string): Promise<CliProcess> {
  const child = startCli([
    'agent',
    ...['--server', server.url, '--token', TOKEN, '--node-id', nodeId, '--region', 'us-east-1', '--exec', 'cat'],
    ...['--http', '0', '--ip', '127.0.0.1', '--tls-cert', agentCertificate.certPath, '--tls-key', agentCertificate.keyPath],
  ])
  running.push(child)
  await child.waitForOutput(`registered as ${nodeId}`)
  return child
}

describe('HTTPS agents', () => {
  test('an HTTPS agent with a certificate from the private CA answers a task when agents.ca names that CA', async () => {
    const mls = start({ agents: { ca: ca.caPath } })
    const agent = await httpsAgent(mls, 'https-1')
    expect(agent.output()).toMatch(/serving POST \/work on port \d+ \(over HTTPS\)/)
    const result = await postTask(mls.url, { region: 'usa', payload: { secure: true } })
    expect(result.status).toBe(200)
    expect(result.headers.get('x-moonlight-node')).toBe('https-1')
    expect(result.json()).toEqual({ secure: true })
  })

  test('without agents.ca the same agent fails verification (502, the attempt says so); a reload that names agents.ca fixes it', async () => {
    const mls = start()
    await httpsAgent(mls, 'https-2')
    const port = mls.registry.get('https-2')?.port
    const refused = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(refused.status).toBe(502)
    expect(refused.json()).toMatchObject({
      code: 'all_attempts_failed',
      attempts: [
        {
          node_id: 'https-2',
          reason: `cannot reach 127.0.0.1:${port}: TLS verification failed, certificate not trusted: unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE); set agents.ca if the agent's certificate comes from a private CA`,
        },
      ],
    })

    // agents.ca is read on reload too.
    mls.reload(loaded({ agents: { ca: ca.caPath } }))
    const answered = await postTask(mls.url, { region: 'usa', payload: 2 })
    expect(answered.status).toBe(200)
    expect(answered.json()).toBe(2)
  })

  test('a plain HTTP agent that claims https fails its attempts instead of being called in clear', async () => {
    const mls = start({ agents: { ca: ca.caPath } })
    const plain = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => Response.json({ called: 'in clear' }) })
    try {
      const heartbeat = await postJson(`${mls.url}/client/heartbeat`, {
        ip: '127.0.0.1',
        node_id: 'liar',
        token: TOKEN,
        region: 'usa',
        port: plain.port,
        scheme: 'https',
      })
      expect(heartbeat.status).toBe(200)
      const result = await postTask(mls.url, { region: 'usa', payload: 1 })
      expect(result.status).toBe(502)
      expect(result.json().attempts[0].reason).toStartWith(`cannot reach 127.0.0.1:${plain.port}: `)
    } finally {
      plain.stop(true)
    }
  })

  test('the heartbeat validates scheme: "http" or "https"', async () => {
    const mls = start()
    const body = { ip: '127.0.0.1', node_id: 'n1', token: TOKEN, region: 'usa', port: 4000 }
    const bad = await postJson(`${mls.url}/client/heartbeat`, { ...body, scheme: 'ftp' })
    expect(bad.status).toBe(400)
    expect(bad.json()).toMatchObject({ code: 'invalid_body', issues: [{ path: 'scheme' }] })
    expect((await postJson(`${mls.url}/client/heartbeat`, { ...body, scheme: 'http' })).status).toBe(200)
  })

  test('a bad agents.ca stops start-up naming the file, and a reload naming one is rejected before anything changes', async () => {
    const notPem = agentCertificate.keyPath
    expect(() => start({ agents: { ca: notPem } })).toThrow(`agents.ca ${notPem}: not a PEM certificate`)
    const mls = start({ tokens: ['first-token-aaaa'] })
    expect(() => mls.reload(loaded({ tokens: ['second-token-bbbb'], agents: { ca: join(ca.dir, 'nowhere.pem') } }))).toThrow(
      `agents.ca ${join(ca.dir, 'nowhere.pem')}: cannot read it (ENOENT)`,
    )
    // The old tokens stay in force: the new one is refused, the old one accepted.
    expect(() => mls.settings.access.authorize({ token: 'second-token-bbbb', address: () => '127.0.0.1', from: 'header' }, 'submit')).toThrow()
    expect(mls.settings.access.authorize({ token: 'first-token-aaaa', address: () => '127.0.0.1', from: 'header' }, 'submit')).toBeDefined()
  })

  test('--tls-cert without --tls-key, or a bad file, is bad usage (exit 2), named', async () => {
    const base = ['agent', '--token', TOKEN, '--region', 'r', '--exec', 'cat', '--http', '0']
    const alone = await runCli([...base, '--tls-cert', agentCertificate.certPath])
    expect(alone.code).toBe(2)
    expect(expectOneLine(alone.stderr)).toContain('pass both --tls-cert F and --tls-key F')
    const swapped = await runCli([...base, '--tls-cert', agentCertificate.keyPath, '--tls-key', agentCertificate.keyPath])
    expect(swapped.code).toBe(2)
    expect(expectOneLine(swapped.stderr)).toContain(`--tls-cert ${agentCertificate.keyPath}: not a PEM certificate`)
    const noHttp = await runCli(['agent', '--token', TOKEN, '--region', 'r', '--exec', 'cat', '--tls-cert', 'a', '--tls-key', 'b'])
    expect(noHttp.code).toBe(2)
    expect(expectOneLine(noHttp.stderr)).toContain('--tls-cert, --tls-key and --signing-secret apply to HTTP agents (--http PORT)')
  })
})
