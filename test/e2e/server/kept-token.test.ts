/**
 * The token `moonlight serve` generates when none is configured is kept for the next start, in the
 * user's state directory: a restart, or a second instance on the machine, takes the same one, so the
 * agents and scripts given it are not refused. Every server here runs with HOME and XDG_STATE_HOME in
 * a temporary directory: nothing is written to the real user's home.
 */
import { describe, expect, test } from 'bun:test'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { postJson, processScope, SEED_CONFIG, type SpawnedServer, spawnServer, startWsAgent } from '../../support/helpers.ts'

const { spawned, cleanups, tempDir } = processScope('mls-kept-token-')

/** A home of its own with no config in it; the state directory is `state`, or the XDG default under the home when `state` is ''. */
function place(state?: string) {
  const home = tempDir()
  return { home, env: { HOME: home, XDG_STATE_HOME: state ?? join(home, 'state') } }
}

async function serve(env: Record<string, string>, args: string[] = []): Promise<SpawnedServer> {
  const child = await spawnServer([...args, '--port', '0', '--host', '127.0.0.1'], { cwd: env.HOME, env })
  spawned.push(child)
  expect({ url: child.url, output: child.output() }).toMatchObject({ url: expect.stringMatching(/^http:\/\//) })
  return child
}

async function stop(child: SpawnedServer): Promise<void> {
  child.kill('SIGTERM')
  expect(await child.exited).toBe(0)
}

/** The token printed at start-up, and the file the start-up line says it is kept in. */
function printed(child: SpawnedServer): { token: string; path: string | undefined } {
  const output = child.output()
  const token = /^\[mls\] {3}(mls_[\w-]+)$/m.exec(output)?.[1]
  expect({ output, token }).toMatchObject({ token: expect.stringMatching(/^mls_/) })
  return { token: token!, path: /kept (?:it )?in (\S+) /.exec(output)?.[1] }
}

describe('the generated token', () => {
  test('is kept in $XDG_STATE_HOME/moonlight/token (mode 0600, path printed); the next start takes it and an agent given it is accepted', async () => {
    const { home, env } = place()
    const first = await serve(env)
    const { token, path } = printed(first)
    expect(path).toBe(join(home, 'state', 'moonlight', 'token'))
    expect(first.output()).toContain(`generated a token and kept it in ${path} `)
    expect(statSync(path!).mode & 0o777).toBe(0o600)
    expect(statSync(join(home, 'state', 'moonlight')).mode & 0o077).toBe(0)
    expect(readFileSync(path!, 'utf8').trim()).toBe(token)
    // Printed once, and never through the log lines.
    expect(first.output().split(token).length - 1).toBe(1)
    await stop(first)

    const second = await serve(env)
    expect(printed(second)).toEqual({ token, path })
    expect(second.output()).toContain(`using the token kept in ${path} `)
    // "Server gone? It reconnects": an agent and a caller holding the token from the first start are let in.
    const agent = await startWsAgent(`${second.url.replace('http', 'ws')}/ws`, { nodeId: 'kept-1', region: 'usa', token })
    cleanups.push(() => agent.close())
    const heartbeat = await postJson(`${second.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'kept-2', token, region: 'usa', port: 9 })
    expect(heartbeat.status).toBe(200)
    expect((await fetch(`${second.url}/clients`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200)
    // A reload with still no token configured keeps it.
    second.kill('SIGHUP')
    await second.waitForOutput(/config: embedded default[\s\S]*config: embedded default/)
    expect((await fetch(`${second.url}/clients`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200)
    expect(statSync(path!).mode & 0o777).toBe(0o600)
  })

  test('without XDG_STATE_HOME it is kept in ~/.local/state/moonlight/token', async () => {
    const { home, env } = place('')
    const child = await serve(env)
    const { token, path } = printed(child)
    expect(path).toBe(join(home, '.local', 'state', 'moonlight', 'token'))
    expect(readFileSync(path!, 'utf8').trim()).toBe(token)
  })

  test('two instances starting at once with no token configured take the same one', async () => {
    const { env } = place()
    const [a, b] = await Promise.all([serve(env), serve(env)])
    expect(printed(a).token).toBe(printed(b).token)
    const token = printed(a).token
    // An agent failing over from one to the other is let in by both.
    for (const child of [a, b]) {
      const heartbeat = await postJson(`${child.url}/client/heartbeat`, { ip: '127.0.0.1', node_id: 'roamer', token, region: 'usa', port: 9 })
      expect(heartbeat.status).toBe(200)
    }
  })

  test('a config that names tokens (tokens, tokens_file, MLS_TOKENS) never reads the file nor writes one', async () => {
    const { home, env } = place()
    const { tokens: _tokens, ...seed } = SEED_CONFIG
    const stateDir = join(home, 'state', 'moonlight')
    const configs: Array<{ name: string; config: unknown; env?: Record<string, string> }> = [
      { name: 'tokens', config: SEED_CONFIG },
      { name: 'tokens_file', config: { ...seed, tokens_file: 'tokens' } },
      { name: 'MLS_TOKENS', config: seed, env: { MLS_TOKENS: 'env-token-aaaa' } },
      { name: 'access', config: { ...seed, access: [{ token: 'monitor-token-aaaa', roles: ['monitor'] }] } },
    ]
    writeFileSync(join(home, 'tokens'), 'file-token-aaaa\n')
    for (const { name, config, env: extra } of configs) {
      writeFileSync(join(home, 'mls.json'), JSON.stringify(config))
      const child = await serve({ ...env, ...extra })
      expect({ name, generated: child.output().includes('mls_') }).toEqual({ name, generated: false })
      expect({ name, written: existsSync(stateDir) }).toEqual({ name, written: false })
      await stop(child)
    }
    // A kept token left from a run without tokens is not read, so it lets no one in once tokens are configured.
    mkdirSync(stateDir, { recursive: true })
    writeFileSync(join(stateDir, 'token'), 'mls_left-from-before-0000\n', { mode: 0o600 })
    writeFileSync(join(home, 'mls.json'), JSON.stringify(SEED_CONFIG))
    const child = await serve(env)
    expect((await fetch(`${child.url}/clients`, { headers: { authorization: 'Bearer mls_left-from-before-0000' } })).status).toBe(401)
    expect(readdirSync(stateDir)).toEqual(['token'])
  })

  test('a state directory that cannot be written: the server starts with a token for this run only, and says why', async () => {
    const { home, env } = place()
    // A file where the directory should be: mkdir fails (ENOTDIR) whoever runs the test, root included.
    writeFileSync(join(home, 'not-a-dir'), '')
    const child = await serve({ ...env, XDG_STATE_HOME: join(home, 'not-a-dir') })
    const { token } = printed(child)
    expect(child.output()).toContain(`could not keep it in ${join(home, 'not-a-dir', 'moonlight', 'token')}`)
    expect(child.output()).toContain('for this run only')
    expect((await fetch(`${child.url}/clients`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200)
  })

  test('a kept file that holds no token stops start-up naming the file, rather than run with another token', async () => {
    const { home, env } = place()
    const path = join(home, 'state', 'moonlight', 'token')
    mkdirSync(join(home, 'state', 'moonlight'), { recursive: true })
    writeFileSync(path, '\n', { mode: 0o600 })
    const child = await spawnServer(['--port', '0', '--host', '127.0.0.1'], { cwd: home, env })
    spawned.push(child)
    expect(await child.exited).toBe(1)
    expect(child.output()).toContain(path)
    expect(child.output()).toContain('delete it')
  })
})
