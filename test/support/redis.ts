/**
 * A real `redis-server` for the cluster tests, on a free port of 127.0.0.1, keeping nothing on disk
 * unless a test asks for its own settings.
 * The tests are never skipped: where redis-server is missing it is installed when we can (root with
 * apt-get, like scripts/ensure-chromium.mjs does for Chromium), otherwise start-up fails naming the
 * one command that installs it.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Subprocess } from 'bun'
import { collectOutput, freePort } from './helpers.ts'

const READY_WITHIN_MS = 10_000
const STOP_WITHIN_MS = 3000
const START_ATTEMPTS = 3
/** Where Debian's package puts it, should PATH not name /usr/bin. */
const DEBIAN_PATH = '/usr/bin/redis-server'

/** Every redis-server still running: killed if the test process exits without stopping them (a crash, a timeout). */
const running = new Set<Subprocess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

export interface TestRedis {
  /** redis://127.0.0.1:N, with the password in it when there is one. */
  url: string
  port: number
  /** SIGTERM, then SIGKILL if it has not exited within a few seconds. */
  stop: () => Promise<void>
  /** `kill -9`: gone at once, nothing flushed. */
  kill: () => Promise<void>
  /** `kill -9`, then a fresh redis-server on the same port (empty, unless its settings persist to its directory). */
  restart: () => Promise<void>
  /** SIGSTOP: the process is there, its sockets accept, and it answers nothing, like a Redis that hangs. */
  freeze: () => void
  /** SIGCONT: it answers again, with everything it held. */
  thaw: () => void
}

export interface RedisOptions {
  password?: string
  /** redis-server settings in place of the default `--save '' --appendonly no`, e.g. `['--appendonly', 'yes']`. */
  settings?: string[]
}

const NOTHING_ON_DISK = ['--save', '', '--appendonly', 'no']

/** Starts redis-server (`--save '' --appendonly no` unless `settings`) on a free port and resolves once it accepts connections. */
export async function startRedis(options: RedisOptions = {}): Promise<TestRedis> {
  const binary = ensureRedisServer()
  const dir = mkdtempSync(join(tmpdir(), 'mls-redis-'))
  const settings = options.settings ?? NOTHING_ON_DISK
  const started = await launchOnFreePort(binary, dir, options.password, settings).catch((error) => {
    rmSync(dir, { recursive: true, force: true })
    throw error
  })
  const { port } = started
  let { child } = started
  const kill = async () => {
    child.kill('SIGKILL')
    await child.exited
  }
  return {
    url: `redis://${options.password === undefined ? '' : `:${encodeURIComponent(options.password)}@`}127.0.0.1:${port}`,
    port,
    kill,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // A frozen one would act on SIGTERM only once continued.
        child.kill('SIGCONT')
        child.kill('SIGTERM')
        const exited = await Promise.race([child.exited.then(() => true), Bun.sleep(STOP_WITHIN_MS).then(() => false)])
        if (!exited) await kill()
      }
      rmSync(dir, { recursive: true, force: true })
    },
    restart: async () => {
      await kill()
      child = await launch(binary, port, dir, options.password, settings)
    },
    freeze: () => process.kill(child.pid, 'SIGSTOP'),
    thaw: () => process.kill(child.pid, 'SIGCONT'),
  }
}

/** The path of redis-server, installing Debian's package first if it is missing and we are root. */
export function ensureRedisServer(): string {
  const found = Bun.which('redis-server') ?? (existsSync(DEBIAN_PATH) ? DEBIAN_PATH : null)
  if (found) return found
  const isRoot = process.getuid?.() === 0
  if (!isRoot) throw new Error('redis-server is missing. Install it, then run the tests again:\n  sudo apt-get update && sudo apt-get install -y redis-server')
  console.log('[test] installing Debian redis-server for the cluster tests…')
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
  execFileSync('apt-get', ['install', '-y', '-qq', 'redis-server'], { stdio: 'inherit', env })
  if (!existsSync(DEBIAN_PATH)) throw new Error(`apt-get installed redis-server, but ${DEBIAN_PATH} is not there`)
  return DEBIAN_PATH
}

/** Another process may take the free port between the probe and redis-server's bind: then another port. */
async function launchOnFreePort(binary: string, dir: string, password: string | undefined, settings: string[]) {
  for (let attempt = 1; ; attempt++) {
    const port = freePort()
    try {
      return { port, child: await launch(binary, port, dir, password, settings) }
    } catch (error) {
      if (attempt === START_ATTEMPTS) throw error
    }
  }
}

async function launch(
  binary: string,
  port: number,
  dir: string,
  password: string | undefined,
  settings: string[],
): Promise<Subprocess<'ignore', 'pipe', 'pipe'>> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', ...settings, '--dir', dir, '--logfile', '']
  if (password !== undefined) args.push('--requirepass', password)
  const child = Bun.spawn([binary, ...args], { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  running.add(child)
  void child.exited.then(() => running.delete(child))
  const output = collectOutput(child.stdout, child.stderr)
  const deadline = Date.now() + READY_WITHIN_MS
  while (!output().includes('Ready to accept connections')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL')
      await child.exited
      throw new Error(`redis-server on port ${port} did not start:\n${output()}`)
    }
    await Bun.sleep(10)
  }
  return child
}
