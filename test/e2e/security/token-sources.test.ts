import { describe, expect, test } from 'bun:test'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCli } from '../../support/cli.ts'
import { openWs, postJson, postTask, processScope, SEED_CONFIG, type SpawnedServer, spawnServer, startHttpAgent } from '../../support/helpers.ts'

/** Tokens from the environment (MLS_TOKENS) and from a file (tokens_file), through a spawned `moonlight serve`. */

const { spawned, cleanups, tempDir } = processScope('mls-token-sources-')

/** The seed's config without its tokens, plus `extra`. */
function writeConfig(dir: string, extra: Record<string, unknown>): string {
  const { tokens: _tokens, ...seed } = SEED_CONFIG
  const path = join(dir, 'mls.json')
  writeFileSync(path, JSON.stringify({ ...seed, ...extra }, null, 2))
  return path
}

async function spawn(args: string[], options: Parameters<typeof spawnServer>[1] = {}): Promise<SpawnedServer> {
  const child = await spawnServer([...args, '--port', '0', '--host', '127.0.0.1'], options)
  spawned.push(child)
  return child
}

/** What `token` may do on `url`: the status of a task, the client list and a heartbeat, and the WebSocket monitor's answer. */
async function abilities(url: string, token: string) {
  const task = await postTask(url, { region: 'us-east-1', payload: 1 }, token)
  const clients = await fetch(`${url}/clients`, { headers: { authorization: `Bearer ${token}` } })
  const heartbeat = await postJson(`${url}/client/heartbeat`, { ip: '127.0.0.1', node_id: `hb-${token}`, token, region: 'us-east-1', port: 9 })
  const peer = await openWs(`${url.replace('http', 'ws')}/ws`)
  peer.send({ type: 'monitor', payload: { token } })
  const monitor = (await peer.next()).type
  peer.close()
  return { task: task.status, clients: clients.status, heartbeat: heartbeat.status, monitor }
}

const EVERYTHING = { task: 200, clients: 200, heartbeat: 200, monitor: 'monitor_ok' }
const NOTHING = { task: 401, clients: 401, heartbeat: 401, monitor: 'error' }

describe('MLS_TOKENS', () => {
  test('comma-separated tokens from the environment hold every role; no token is generated', async () => {
    const dir = tempDir()
    const child = await spawn(['--config', writeConfig(dir, {})], { env: { MLS_TOKENS: 'env-token-aaaa, env-token-bbbb' } })
    expect(child.url).toStartWith('http://')
    expect(child.output()).not.toContain('generated')
    const agent = await startHttpAgent(child.url, { nodeId: 'east', region: 'us-east-1', token: 'env-token-aaaa' })
    cleanups.push(agent.stop)
    expect(await abilities(child.url, 'env-token-aaaa')).toEqual(EVERYTHING)
    expect(await abilities(child.url, 'env-token-bbbb')).toEqual(EVERYTHING)
    expect(await abilities(child.url, 'supersecrettokenox0')).toEqual(NOTHING)
  })

  test('with no config file at all it adds to the embedded default', async () => {
    const dir = tempDir()
    const child = await spawn([], { cwd: dir, env: { HOME: dir, MLS_TOKENS: 'env-token-aaaa' } })
    expect(child.output()).toContain('config: embedded default')
    expect(child.output()).not.toContain('generated')
    expect((await fetch(`${child.url}/clients`, { headers: { authorization: 'Bearer env-token-aaaa' } })).status).toBe(200)
  })

  test('a bad entry stops start-up naming its position, not the token', async () => {
    const dir = tempDir()
    const child = await spawn(['--config', writeConfig(dir, {})], { env: { MLS_TOKENS: 'env-token-aaaa,tiny' } })
    expect(await child.exited).toBe(1)
    expect(child.output()).toContain('MLS_TOKENS')
    expect(child.output()).toContain('entry 2: tokens must be at least 8 characters')
    expect(child.output()).not.toContain('tiny')
  })
})

describe('tokens_file', () => {
  test('tokens from a file next to the config hold every role; SIGHUP reads the file again', async () => {
    const dir = tempDir()
    mkdirSync(join(dir, 'secrets'))
    const tokensPath = join(dir, 'secrets', 'tokens')
    writeFileSync(tokensPath, '# one token per line\nfile-token-aaaa\nfile-token-bbbb\n')
    // Started from another directory: the path is relative to the config file.
    const child = await spawn(['--config', writeConfig(dir, { tokens_file: 'secrets/tokens' })], { cwd: tempDir() })
    expect(child.output()).not.toContain('generated')
    const agent = await startHttpAgent(child.url, { nodeId: 'east', region: 'us-east-1', token: 'file-token-aaaa' })
    cleanups.push(agent.stop)
    expect(await abilities(child.url, 'file-token-aaaa')).toEqual(EVERYTHING)
    expect(await abilities(child.url, 'file-token-bbbb')).toEqual(EVERYTHING)

    // A rotation: bbbb goes, cccc comes; the config file itself does not change.
    writeFileSync(tokensPath, 'file-token-aaaa\nfile-token-cccc\n')
    child.process.kill('SIGHUP')
    await child.waitForOutput('config reloaded')
    expect(await abilities(child.url, 'file-token-cccc')).toEqual(EVERYTHING)
    expect(await abilities(child.url, 'file-token-bbbb')).toEqual(NOTHING)

    // A bad file is rejected on reload, naming the line; the tokens in force stay.
    writeFileSync(tokensPath, 'file-token-aaaa\nshort\n')
    child.process.kill('SIGHUP')
    await child.waitForOutput('reload rejected')
    expect(child.output()).toContain('line 2: tokens must be at least 8 characters')
    expect(child.output()).not.toContain('short\n')
    expect(await abilities(child.url, 'file-token-cccc')).toEqual(EVERYTHING)
  })

  test('a missing file stops start-up', async () => {
    const dir = tempDir()
    const child = await spawn(['--config', writeConfig(dir, { tokens_file: 'nowhere' })])
    expect(await child.exited).toBe(1)
    expect(child.output()).toContain(`cannot read tokens_file ${join(dir, 'nowhere')}`)
  })
})

describe('moonlight config check', () => {
  test('shows no token of access in the effective config, and checks tokens_file', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'tokens'), 'file-token-aaaa\n')
    const path = writeConfig(dir, { tokens_file: 'tokens', access: [{ token: 'agents-secret-1357', roles: ['agent'], regions: ['usa'] }] })
    const result = await runCli(['config', 'check', path])
    expect(result.code).toBe(0)
    const effective = JSON.parse(result.stdout.slice(result.stdout.indexOf('{')))
    expect(effective.access).toEqual([{ token: 'agen… (18 characters)', roles: ['agent'], regions: ['usa'] }])
    expect(result.stdout).not.toContain('agents-secret-1357')
    expect(result.stdout).not.toContain('file-token-aaaa')
    writeFileSync(join(dir, 'tokens'), 'tiny\n')
    const bad = await runCli(['config', 'check', path])
    expect(bad.code).toBe(1)
    expect(bad.stdout).toContain('line 1: tokens must be at least 8 characters')
  })
})
