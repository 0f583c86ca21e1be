/**
 * Helpers for driving the `moonlight` CLI: in this process through `main(argv, env)`, or as a real
 * subprocess where the process itself is the point (its exit, signals, stdin, a terminal, the binary).
 */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { format } from 'node:util'
import { main } from '../../src/cli.ts'
import { type CliOptions, type CliProcess, cleanEnv, ROOT, SOURCE_CLI } from './helpers.ts'

export { type CliOptions, type CliProcess, SOURCE_CLI, startCli } from './helpers.ts'

export const BINARY = join(ROOT, 'dist/moonlight')

/** The newest modification time of anything the binary is built from. */
function newestSourceMs(path: string): number {
  const stat = statSync(path)
  if (!stat.isDirectory()) return stat.mtimeMs
  return Math.max(stat.mtimeMs, ...readdirSync(path).map((name) => newestSourceMs(join(path, name))))
}

/** Builds dist/moonlight (`bun run build`) when it is missing or older than its sources; `npm test` has built it already. */
export function ensureBinary(): void {
  const inputs = ['src', 'public', 'package.json'].map((name) => join(ROOT, name)).filter(existsSync)
  const stale = !existsSync(BINARY) || statSync(BINARY).mtimeMs < Math.max(...inputs.map(newestSourceMs))
  if (stale) {
    const build = Bun.spawnSync([process.execPath, 'run', 'build'], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
    if (build.exitCode !== 0) throw new Error(`bun run build failed:\n${build.stderr.toString()}`)
  }
}
export const FIXTURES = join(ROOT, 'test/fixtures')

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs `moonlight ...args` to completion. */
export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const child = Bun.spawn([...(options.command ?? SOURCE_CLI), ...args], {
    cwd: options.cwd ?? ROOT,
    env: cleanEnv(options.env),
    stdin: new Blob([options.stdin ?? '']),
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited])
  return { code, stdout, stderr }
}

/**
 * Runs `moonlight ...args` in this process: `main` with a clean environment plus `env`, capturing
 * console.log/console.warn/console.error and process.stdout.write (how answers and --json are printed),
 * all restored afterwards. Stdin is not given: a command that reads it needs runCli.
 */
export async function runMain(args: string[], options: { env?: Record<string, string> } = {}): Promise<CliResult> {
  let stdout = ''
  let stderr = ''
  const saved = { log: console.log, warn: console.warn, error: console.error, write: process.stdout.write }
  const decoder = new TextDecoder()
  console.log = (...values: unknown[]) => {
    stdout += `${format(...values)}\n`
  }
  const toStderr = (...values: unknown[]) => {
    stderr += `${format(...values)}\n`
  }
  console.warn = toStderr
  console.error = toStderr
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += typeof chunk === 'string' ? chunk : decoder.decode(chunk)
    return true
  }) as typeof process.stdout.write
  try {
    const code = await main(args, cleanEnv(options.env))
    return { code, stdout, stderr }
  } finally {
    console.log = saved.log
    console.warn = saved.warn
    console.error = saved.error
    process.stdout.write = saved.write
  }
}

/** Runs `moonlight ...args` with a pseudo-terminal as stdin/stdout, the way a person would; returns what the terminal showed. */
export async function runCliInTerminal(args: string[], options: CliOptions = {}): Promise<{ code: number; screen: string }> {
  let screen = ''
  const decoder = new TextDecoder()
  let sawEnd: () => void = () => {}
  const ended = new Promise<void>((resolve) => (sawEnd = resolve))
  const child = Bun.spawn([...(options.command ?? SOURCE_CLI), ...args], {
    cwd: options.cwd ?? ROOT,
    env: cleanEnv(options.env),
    terminal: {
      cols: 200,
      rows: 50,
      data: (_terminal, data) => (screen += decoder.decode(data, { stream: true })),
      // End of the terminal's stream: everything the program wrote has been read.
      exit: () => sawEnd(),
    },
  })
  const code = await child.exited
  await ended
  child.terminal?.close()
  return { code, screen: screen.replace(/\r\n/g, '\n') }
}

/** Stops a process left running by a failed test; harmless if it already exited. */
export async function ensureStopped(child: CliProcess | undefined): Promise<void> {
  if (!child || child.process.exitCode !== null) return
  child.kill('SIGKILL')
  await child.exited
}

/** A failure message is exactly one line, and never a stack trace. */
export function expectOneLine(stderr: string): string {
  const lines = stderr.trimEnd().split('\n')
  if (lines.length !== 1 || lines[0] === '' || /^\s+at /m.test(stderr)) throw new Error(`expected one stderr line, got:\n${stderr}`)
  return lines[0]!
}
