/** TLS for the server: HTTPS and WSS on its port, the CLI and agents with --ca, and a certificate renewed by SIGHUP. */
import { afterEach, describe, expect, test } from 'bun:test'
import { copyFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeTestCa, peerCertificate } from '../../support/certificates.ts'
import { type CliProcess, ensureStopped, expectOneLine, runCli, startCli } from '../../support/cli.ts'
import { SEED_CONFIG, type SpawnedServer, spawnServer, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const ca = makeTestCa()
const first = ca.issue('server-one')
const scope = testScope()

let running: CliProcess[] = []
afterEach(async () => {
  await Promise.all(running.map(ensureStopped))
  running = []
})

function track<T extends CliProcess>(child: T): T {
  running.push(child)
  return child
}

/** A fetch that trusts the test CA. */
function secureFetch(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, { ...init, tls: { ca: ca.ca } })
}

function postTask(url: string, body: unknown): Promise<Response> {
  return secureFetch(`${url}/task/request`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify(body),
  })
}

/** `moonlight agent` over WebSocket against `url`, waited for until it has registered. */
async function wsAgent(url: string, nodeId: string, extra: string[] = ['--ca', ca.caPath]): Promise<CliProcess> {
  const child = track(startCli(['agent', '--server', url, '--token', TOKEN, '--node-id', nodeId, '--region', 'us-east-1', '--exec', 'cat', ...extra]))
  await child.waitForOutput(`registered as ${nodeId}`)
  return child
}

describe('the server over TLS', () => {
  test('serves HTTPS and WSS on its port: the API, the pages, and tasks through a WebSocket agent', async () => {
    const mls = scope.server({ tls: { cert: first.certPath, key: first.keyPath } })
    expect(mls.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    expect(mls.wsUrl).toStartWith('wss://')
    expect(await peerCertificate(mls.server.port, ca.ca)).toEqual({ name: 'server-one', serial: first.serial })

    await wsAgent(mls.url, 'wss-1')
    const answer = await postTask(mls.url, { region: 'usa', payload: { over: 'tls' } })
    expect(answer.status).toBe(200)
    expect(answer.headers.get('x-moonlight-node')).toBe('wss-1')
    expect(await answer.json()).toEqual({ over: 'tls' })

    const status = await (await secureFetch(`${mls.url}/status`)).json()
    expect(status).toMatchObject({ server: 'Online', clients: 1, websocket_connections: 1 })
    for (const path of ['/healthz', '/regions', '/metrics', '/', '/dashboard'])
      expect({ path, status: (await secureFetch(`${mls.url}${path}`)).status }).toEqual({ path, status: 200 })
    const clients = await secureFetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
    expect((await clients.json()).clients).toMatchObject([{ node_id: 'wss-1', protocol: 'ws' }])
    // Plain HTTP on the TLS port gets nowhere.
    await expect(fetch(`${mls.url.replace('https', 'http')}/status`)).rejects.toThrow()
  })

  test('moonlight task, status and clients speak https:// with --ca or MLS_CA', async () => {
    const mls = scope.server({ tls: { cert: first.certPath, key: first.keyPath } })
    await wsAgent(mls.url, 'cli-1')

    const task = await runCli(['task', '--server', mls.url, '--token', TOKEN, '--ca', ca.caPath, '--payload', '{"n":1}'])
    expect(task).toMatchObject({ code: 0, stdout: '{"n":1}' })
    const status = await runCli(['status', '--server', mls.url], { env: { MLS_CA: ca.caPath } })
    expect(status.code).toBe(0)
    expect(status.stdout).toContain(`Online`)
    expect(status.stdout).toContain(`at ${mls.url}`)
    const clients = await runCli(['clients', '--server', mls.url, '--token', TOKEN, '--ca', ca.caPath, '--json'])
    expect(clients.code).toBe(0)
    expect(JSON.parse(clients.stdout).clients).toMatchObject([{ node_id: 'cli-1' }])
  })

  test('without --ca a certificate from a private CA fails in one clear line, never a stack trace', async () => {
    const mls = scope.server({ tls: { cert: first.certPath, key: first.keyPath } })
    const reason = `cannot reach ${mls.url}: certificate not trusted: unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE); pass --ca FILE (or set MLS_CA) if its certificate comes from a private CA`
    const status = await runCli(['status', '--server', mls.url])
    expect(status.code).toBe(1)
    expect(expectOneLine(status.stderr)).toBe(`moonlight status: ${reason}`)
    const task = await runCli(['task', '--server', mls.url, '--token', TOKEN, '--payload', '1'])
    expect(expectOneLine(task.stderr)).toBe(`moonlight task: ${reason}`)
    const clients = await runCli(['clients', '--server', mls.url, '--token', TOKEN])
    expect(expectOneLine(clients.stderr)).toBe(`moonlight clients: ${reason}`)

    // The agent says the same and keeps trying, as with a server that is down.
    const agent = track(startCli(['agent', '--server', mls.url, '--token', TOKEN, '--region', 'us-east-1', '--exec', 'cat']))
    await agent.waitForOutput('reconnecting in')
    expect(agent.output()).toContain(
      'cannot connect: certificate not trusted: unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE); pass --ca FILE',
    )
    expect(agent.output()).not.toMatch(/^\s+at /m)
  })

  test('a self-signed certificate is refused without --ca, and trusted with itself as the CA', async () => {
    const self = ca.selfSigned('self-signed')
    const mls = scope.server({ tls: { cert: self.certPath, key: self.keyPath } })
    const refused = await runCli(['status', '--server', mls.url])
    expect(refused.code).toBe(1)
    expect(expectOneLine(refused.stderr)).toContain('certificate not trusted: self signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT); pass --ca FILE')
    expect((await runCli(['status', '--server', mls.url, '--ca', self.certPath])).code).toBe(0)
  })

  test('a --ca that is not a PEM certificate is bad usage (exit 2), named', async () => {
    const result = await runCli(['status', '--server', 'https://127.0.0.1:1', '--ca', ca.issue('usage').keyPath])
    expect(result.code).toBe(2)
    expect(expectOneLine(result.stderr)).toContain(`--ca ${join(ca.dir, 'usage.key')}: not a PEM certificate`)
  })
})

describe('moonlight serve with tls', () => {
  const spawned: SpawnedServer[] = []
  afterEach(async () => {
    for (const child of spawned.splice(0)) {
      child.process.kill('SIGKILL')
      await child.exited
    }
  })

  async function serve(tls: { cert: string; key: string }): Promise<SpawnedServer> {
    const config = join(ca.dir, `mls-${crypto.randomUUID()}.json`)
    writeFileSync(config, JSON.stringify({ ...SEED_CONFIG, tls }))
    const child = await spawnServer(['--config', config, '--port', '0', '--host', '127.0.0.1'])
    spawned.push(child)
    return child
  }

  /** Files the config names, so a test can renew them in place. */
  function liveFiles(from: { certPath: string; keyPath: string }, name: string): { cert: string; key: string } {
    const files = { cert: join(ca.dir, `${name}-live.pem`), key: join(ca.dir, `${name}-live.key`) }
    copyFileSync(from.certPath, files.cert)
    copyFileSync(from.keyPath, files.key)
    return files
  }

  test('prints https:// URLs', async () => {
    const child = await serve({ cert: first.certPath, key: first.keyPath })
    expect(child.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    // Two lines after "listening on", which is all spawnServer waits for: under load it may come in a later chunk.
    const docsLine = `docs ${child.url}/  dashboard ${child.url}/dashboard`
    await waitFor(() => child.output().includes(docsLine), 'the docs line', 5000)
    expect(child.output()).toContain(docsLine)
    expect(child.output()).toContain(`TLS: serving CN=server-one (serial ${first.serial}`)
  })

  test('SIGHUP renews the certificate for new connections; a WebSocket agent connected before keeps its tasks and broadcasts', async () => {
    const live = liveFiles(first, 'renew')
    const child = await serve(live)
    const port = Number(new URL(child.url).port)
    await wsAgent(child.url, 'before-renewal')
    expect(await peerCertificate(port, ca.ca)).toEqual({ name: 'server-one', serial: first.serial })

    const renewed = ca.issue('server-two')
    expect(renewed.serial).not.toBe(first.serial)
    copyFileSync(renewed.certPath, live.cert)
    copyFileSync(renewed.keyPath, live.key)
    child.process.kill('SIGHUP')
    await child.waitForOutput('TLS: renewed')
    expect(child.output()).toContain(`TLS: renewed, new connections get CN=server-two (serial ${renewed.serial}`)
    expect(await peerCertificate(port, ca.ca)).toEqual({ name: 'server-two', serial: renewed.serial })

    // The agent's socket stayed on the instance it connected to, and still gets single tasks and broadcasts.
    const single = await postTask(child.url, { region: 'usa', payload: 'after' })
    expect(single.status).toBe(200)
    expect(single.headers.get('x-moonlight-node')).toBe('before-renewal')
    const broadcast = await (await postTask(child.url, { region: 'usa', payload: 'all', mode: 'broadcast' })).json()
    expect(broadcast).toMatchObject({ targets: 1, answered: 1, results: [{ node_id: 'before-renewal', status: 200, response: 'all' }] })
    // A new agent connects over the new certificate.
    await wsAgent(child.url, 'after-renewal')
    expect((await (await secureFetch(`${child.url}/status`)).json()).websocket_connections).toBe(2)

    // The same files again: nothing to renew.
    child.process.kill('SIGHUP')
    await waitFor(() => child.count('config reloaded') === 2, 'the second reload')
    expect(child.count('TLS: renewed')).toBe(1)
  })

  test('a bad file on SIGHUP is rejected, named, and the certificate served stays', async () => {
    const live = liveFiles(first, 'bad')
    const child = await serve(live)
    const port = Number(new URL(child.url).port)

    writeFileSync(live.cert, 'not a certificate\n')
    child.process.kill('SIGHUP')
    await child.waitForOutput('reload rejected')
    expect(child.output()).toContain(`tls.cert ${live.cert}: not a PEM certificate`)
    expect(await peerCertificate(port, ca.ca)).toEqual({ name: 'server-one', serial: first.serial })

    // Half a renewal (the new certificate, the old key) is refused the same way.
    const other = ca.issue('server-three')
    copyFileSync(other.certPath, live.cert)
    child.process.kill('SIGHUP')
    await waitFor(() => child.count('reload rejected') === 2, 'the second rejection')
    expect(child.output()).toContain(`tls.key ${live.key}: not the key of the certificate in tls.cert ${live.cert}`)
    expect(await peerCertificate(port, ca.ca)).toEqual({ name: 'server-one', serial: first.serial })
    expect((await secureFetch(`${child.url}/healthz`)).status).toBe(200)
  })

  test('a missing or bad file stops start-up with one line naming it (exit 1)', async () => {
    const missing = join(ca.dir, 'missing.key')
    const cases = [
      { tls: { cert: first.certPath, key: missing }, line: `moonlight serve: tls.key ${missing}: cannot read it (ENOENT)` },
      { tls: { cert: first.keyPath, key: first.keyPath }, line: `moonlight serve: tls.cert ${first.keyPath}: not a PEM certificate` },
      { tls: { cert: first.certPath, key: first.certPath }, line: `moonlight serve: tls.key ${first.certPath}: not a PEM private key` },
    ]
    for (const { tls, line } of cases) {
      const child = await serve(tls)
      expect(await child.exited).toBe(1)
      expect(child.output()).toContain(`${line}\n`)
      expect(child.output()).not.toContain('listening on')
      expect(child.output()).not.toMatch(/^\s+at /m)
    }
  })
})
