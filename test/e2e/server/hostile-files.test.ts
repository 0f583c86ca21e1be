/**
 * What `moonlight serve` reads from files at start-up and at every SIGHUP, when those files are not
 * what they should be: what the operator sees is one clear line naming the file and the problem (exit 1
 * at start-up; at a reload, the previous config kept and a log line saying why), never a hang, a
 * stack trace, a token silently lost or a secret printed. Each server runs with HOME and
 * XDG_STATE_HOME in a temporary directory.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { chmodSync, copyFileSync, lchownSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeTestCa } from '../../support/certificates.ts'
import { processScope, SEED_CONFIG, type SpawnedServer, spawnServer } from '../../support/helpers.ts'

const { spawned, tempDir } = processScope('mls-hostile-files-')
const { tokens: _seedTokens, ...SEED_WITHOUT_TOKENS } = SEED_CONFIG

/** A home of its own (no config in it, the state directory inside it). */
function home(): { dir: string; env: Record<string, string> } {
  const dir = tempDir()
  return { dir, env: { HOME: dir, XDG_STATE_HOME: join(dir, 'state') } }
}

async function serve(dir: string, env: Record<string, string>, args: string[] = []): Promise<SpawnedServer> {
  const child = await spawnServer([...args, '--port', '0', '--host', '127.0.0.1'], { cwd: dir, env })
  spawned.push(child)
  return child
}

/** A server that must not start: its exit status and everything it printed. */
async function refused(dir: string, env: Record<string, string>, args: string[]): Promise<string> {
  const child = await serve(dir, env, args)
  // One that started anyway is stopped at once, so the test fails now rather than at its timeout.
  if (child.url) child.kill('SIGTERM')
  expect({ exit: await child.exited, output: child.output() }).toMatchObject({ exit: 1 })
  const output = child.output()
  expect(output).not.toContain('listening on')
  expect(output).not.toMatch(/^\s+at /m)
  return output
}

async function status(url: string, token: string): Promise<number> {
  return (await fetch(`${url}/clients`, { headers: { authorization: `Bearer ${token}` } })).status
}

/** Sends SIGHUP and waits for the `n`th reload to be rejected; the output from that reload on. */
async function rejectedReload(child: SpawnedServer, n: number): Promise<string> {
  const before = child.output().length
  child.kill('SIGHUP')
  await child.waitForOutput(new RegExp(`(?:reload rejected[\\s\\S]*){${n}}`))
  return child.output().slice(before)
}

describe('the config file', () => {
  test('a key given twice (JSON keeps only the last) stops start-up naming the key and its lines, and is rejected at reload', async () => {
    const { dir, env } = home()
    const path = join(dir, 'mls.json')
    writeFileSync(path, '{\n  "tokens": ["first-token-aaaa"],\n  "region_hierarchy": {},\n  "tokens": ["second-token-bbbb"]\n}\n')
    const output = await refused(dir, env, ['--config', path])
    expect(output).toContain(`moonlight serve: config ${path} has the key "tokens" twice (line 2, column 3 and line 4, column 3): JSON keeps only the last`)
    expect(output).not.toContain('token-aaaa')
    // Nested keys too, by their dotted path.
    writeFileSync(path, JSON.stringify({ ...SEED_CONFIG }).replace('"usa":"northamerica"', '"usa":"northamerica","usa":"europe"'))
    expect(await refused(dir, env, ['--config', path])).toContain(`config ${path} has the key "region_hierarchy.usa" twice (line 1, column `)

    writeFileSync(path, JSON.stringify(SEED_CONFIG))
    const child = await serve(dir, env, ['--config', path])
    writeFileSync(path, `{"tokens": ["${SEED_CONFIG.tokens[0]}"], "access": [{"token": "monitor-token-cccc", "roles": ["monitor"]}], "access": []}`)
    expect(await rejectedReload(child, 1)).toContain('has the key "access" twice')
    expect(await status(child.url, SEED_CONFIG.tokens[0]!)).toBe(200)
  })

  test('bytes that are not UTF-8 stop start-up naming the line, rather than become a token no client can send', async () => {
    const { dir, env } = home()
    const path = join(dir, 'mls.json')
    // A Latin-1 "é" in a token: decoded as U+FFFD it would be a token nobody holds.
    writeFileSync(path, Buffer.concat([Buffer.from('{\n  "tokens": [\n    "caf'), Buffer.from([0xe9]), Buffer.from('-token-aaaa"\n  ]\n}\n')]))
    const output = await refused(dir, env, ['--config', path])
    expect(output).toContain(`moonlight serve: config ${path} is not UTF-8 (line 3 has bytes that are not): save it as UTF-8`)
    expect(output).not.toContain('-token-aaaa')
  })

  test('a syntax error never echoes the text of the file: an unquoted token is not printed, at start-up or in the reload log', async () => {
    const { dir, env } = home()
    const path = join(dir, 'mls.json')
    writeFileSync(path, '{\n  "tokens": [unquotedsecret0123]\n}\n')
    const output = await refused(dir, env, ['--config', path])
    expect(output).toContain(`config ${path} is not valid JSON at line 2, column 14`)
    expect(output).not.toContain('unquotedsecret0123')

    writeFileSync(path, JSON.stringify(SEED_CONFIG))
    const child = await serve(dir, env, ['--config', path])
    writeFileSync(path, `{"tokens": ["${SEED_CONFIG.tokens[0]}", reloadsecret4567]}`)
    const reloaded = await rejectedReload(child, 1)
    expect(reloaded).toContain('is not valid JSON at line 1, column ')
    expect(child.output()).not.toContain('reloadsecret4567')
  })

  test('a FIFO as the config or the tokens_file is refused at start-up, and at a reload the server keeps serving instead of hanging on it', async () => {
    const { dir, env } = home()
    const fifo = join(dir, 'pipe')
    Bun.spawnSync(['mkfifo', fifo])
    expect(await refused(dir, env, ['--config', fifo])).toContain(`moonlight serve: cannot read config ${fifo}: a named pipe (FIFO), not a file`)

    const path = join(dir, 'mls.json')
    const tokensFile = join(dir, 'tokens')
    writeFileSync(tokensFile, 'file-token-aaaa\n')
    writeFileSync(path, JSON.stringify({ ...SEED_WITHOUT_TOKENS, tokens_file: 'tokens' }))
    const child = await serve(dir, env, ['--config', path])
    // A reload that blocked on the pipe's open would stop every request, not only the reload.
    rmSync(tokensFile)
    Bun.spawnSync(['mkfifo', tokensFile])
    expect(await rejectedReload(child, 1)).toContain(`cannot read tokens_file ${tokensFile}: a named pipe (FIFO), not a file`)
    expect(await status(child.url, 'file-token-aaaa')).toBe(200)
  })

  test('what holds: a directory is refused by name; a BOM and CRLF load; a retargeted symlink and a file replaced by rename are read at reload; a vanished tokens_file keeps the tokens in force', async () => {
    const { dir, env } = home()
    expect(await refused(dir, env, ['--config', dir])).toContain(`cannot read config ${dir}: EISDIR`)

    const one = join(dir, 'one.json')
    const two = join(dir, 'two.json')
    const link = join(dir, 'mls.json')
    writeFileSync(one, `\uFEFF${JSON.stringify({ ...SEED_WITHOUT_TOKENS, tokens: ['token-one-aaaa'], tokens_file: 'tokens' }, null, 2).replace(/\n/g, '\r\n')}`)
    writeFileSync(two, JSON.stringify({ ...SEED_WITHOUT_TOKENS, tokens: ['token-two-bbbb'], tokens_file: 'tokens' }))
    writeFileSync(join(dir, 'tokens'), 'file-token-aaaa\n')
    symlinkSync(one, link)
    const child = await serve(dir, env, ['--config', link])
    expect(await status(child.url, 'token-one-aaaa')).toBe(200)

    rmSync(link)
    symlinkSync(two, link)
    child.kill('SIGHUP')
    await child.waitForOutput(/config reloaded/)
    expect(await status(child.url, 'token-two-bbbb')).toBe(200)
    expect(await status(child.url, 'token-one-aaaa')).toBe(401)

    writeFileSync(`${two}.new`, JSON.stringify({ ...SEED_WITHOUT_TOKENS, tokens: ['token-three-cccc'], tokens_file: 'tokens' }))
    renameSync(`${two}.new`, two)
    child.kill('SIGHUP')
    await child.waitForOutput(/(?:config reloaded[\s\S]*){2}/)
    expect(await status(child.url, 'token-three-cccc')).toBe(200)

    rmSync(join(dir, 'tokens'))
    expect(await rejectedReload(child, 1)).toContain(`cannot read tokens_file ${join(dir, 'tokens')}: ENOENT`)
    expect(await status(child.url, 'file-token-aaaa')).toBe(200)
    expect(await status(child.url, 'token-three-cccc')).toBe(200)
  })
})

describe('the kept token file', () => {
  /** A token file planted where the generated token is kept, holding a token its planter knows. */
  function plant(dir: string, how: 'symlink' | 'other owner' | 'writable by others'): string {
    const stateDir = join(dir, 'state', 'moonlight')
    mkdirSync(stateDir, { recursive: true, mode: 0o700 })
    const path = join(stateDir, 'token')
    const planted = join(dir, 'planted')
    writeFileSync(planted, 'mls_planted-by-someone-else\n', { mode: 0o600 })
    if (how === 'symlink') symlinkSync(planted, path)
    else copyFileSync(planted, path)
    // The tests run as root, which may give a file away: nobody's uid stands for another user.
    if (how === 'other owner') lchownSync(path, 65534, 65534)
    if (how === 'writable by others') chmodSync(path, 0o666)
    return path
  }

  for (const how of ['symlink', 'other owner', 'writable by others'] as const) {
    test(`one that is ${how === 'symlink' ? 'a symbolic link' : how === 'other owner' ? "another user's" : 'writable by others'} stops start-up naming the file; its token is never used`, async () => {
      const { dir, env } = home()
      const path = plant(dir, how)
      const output = await refused(dir, env, [])
      expect(output).toContain(`moonlight serve: the kept token ${path} `)
      expect(output).toContain('delete it for a new one')
      expect(output).not.toContain('mls_planted-by-someone-else')
    })
  }
})

describe('TLS files', () => {
  const ca = makeTestCa('Hostile Files CA')
  afterAll(() => rmSync(ca.dir, { recursive: true, force: true }))

  function tlsConfig(dir: string, cert: string, key: string): string {
    const path = join(dir, 'mls.json')
    writeFileSync(path, JSON.stringify({ ...SEED_CONFIG, tls: { cert, key } }))
    return path
  }

  /** A self-signed certificate for 127.0.0.1 that expired yesterday. */
  function expired(dir: string): { cert: string; key: string } {
    const run = (args: string[]) => expect(Bun.spawnSync(['openssl', ...args], { cwd: dir, stderr: 'pipe' }).exitCode).toBe(0)
    run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'old.key', '-out', 'old.csr', '-subj', '/CN=old'])
    run(['x509', '-req', '-in', 'old.csr', '-signkey', 'old.key', '-days', '-1', '-out', 'old.pem'])
    return { cert: join(dir, 'old.pem'), key: join(dir, 'old.key') }
  }

  test('an expired certificate is served with a warning naming the file and the date, at start-up and when a reload brings one', async () => {
    const { dir, env } = home()
    const old = expired(dir)
    const child = await serve(dir, env, ['--config', tlsConfig(dir, old.cert, old.key)])
    expect(child.url).toMatch(/^https:/)
    expect(child.output()).toMatch(
      new RegExp(`WARN .*TLS: the certificate in tls.cert ${old.cert} expired on \\w{3} +\\d+ [\\d:]+ \\d{4} GMT: clients will refuse it`),
    )

    const fresh = ca.issue('fresh')
    const live = { cert: join(dir, 'live.pem'), key: join(dir, 'live.key') }
    copyFileSync(fresh.certPath, live.cert)
    copyFileSync(fresh.keyPath, live.key)
    const second = await serve(dir, env, ['--config', tlsConfig(dir, live.cert, live.key)])
    expect(second.output()).not.toContain('expired on')
    copyFileSync(old.cert, live.cert)
    copyFileSync(old.key, live.key)
    second.kill('SIGHUP')
    await second.waitForOutput('TLS: renewed')
    expect(second.output()).toContain(`TLS: the certificate in tls.cert ${live.cert} expired on`)
  })

  test('a chain whose second certificate is corrupt is refused naming the file and the certificate, at start-up and at reload', async () => {
    const { dir, env } = home()
    const server = ca.issue('chained')
    // The intermediate's base64 damaged: served as is, clients that need it could not verify the server.
    const broken = join(dir, 'fullchain.pem')
    writeFileSync(broken, `${server.cert}${ca.ca.replace(/\n[A-Za-z0-9+/]{20}/, '\n!!!!!!!!!!!!!!!!!!!!')}`)
    const output = await refused(dir, env, ['--config', tlsConfig(dir, broken, server.keyPath)])
    expect(output).toContain(`moonlight serve: tls.cert ${broken}: certificate 2 of 2 is not a valid PEM certificate`)

    const good = join(dir, 'good.pem')
    writeFileSync(good, `${server.cert}${ca.ca}`)
    const child = await serve(dir, env, ['--config', tlsConfig(dir, good, server.keyPath)])
    expect(child.url).toMatch(/^https:/)
    copyFileSync(broken, good)
    expect(await rejectedReload(child, 1)).toContain(`tls.cert ${good}: certificate 2 of 2 is not a valid PEM certificate`)
  })
})
