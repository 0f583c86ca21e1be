/** Helpers for driving the `moonlight` CLI as a real subprocess: one-shot commands and long-running agents. */
import type { Subprocess } from 'bun'
import { join } from 'node:path'
import { ROOT, waitFor } from '../helpers.ts'

/** The CLI from the sources; binary tests pass `[BINARY]` instead. */
export const SOURCE_CLI = [process.execPath, join(ROOT, 'src/cli.ts')]
export const BINARY = join(ROOT, 'dist/moonlight')
export const FIXTURES = join(ROOT, 'test/fixtures')

export interface CliOptions {
  command?: string[]
  env?: Record<string, string>
  cwd?: string
  /** Text piped to stdin; without it stdin is empty (not a terminal). */
  stdin?: string
}

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Environment with none of the caller's own Moonlight settings leaking in. */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  return { ...process.env, MLS_SERVER: '', MLS_TOKEN: '', MLS_CONFIG: '', ...extra }
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

export interface CliProcess {
  process: Subprocess<'ignore', 'pipe', 'pipe'>
  output: () => string
  waitForOutput: (text: string | RegExp, timeoutMs?: number) => Promise<void>
  /** How many times `text` appears in the output so far. */
  count: (text: string) => number
  exited: Promise<number>
  kill: (signal?: NodeJS.Signals) => void
}

/** Starts a long-running `moonlight ...args` (an agent, a server) and collects its stdout and stderr. */
export function startCli(args: string[], options: CliOptions = {}): CliProcess {
  const child = Bun.spawn([...(options.command ?? SOURCE_CLI), ...args], {
    cwd: options.cwd ?? ROOT,
    env: cleanEnv(options.env),
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  let output = ''
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    const reader = stream.getReader()
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) output += decoder.decode(chunk.value, { stream: true })
  }
  void pump(child.stdout)
  void pump(child.stderr)
  const matches = (text: string | RegExp) => (typeof text === 'string' ? output.includes(text) : text.test(output))
  return {
    process: child,
    output: () => output,
    waitForOutput: async (text, timeoutMs = 10_000) => {
      await waitFor(() => matches(text) || child.exitCode !== null, `output ${text}`, timeoutMs)
      if (!matches(text)) throw new Error(`exited (${child.exitCode}) before printing ${text}:\n${output}`)
    },
    count: (text) => output.split(text).length - 1,
    exited: child.exited,
    kill: (signal = 'SIGTERM') => child.kill(signal),
  }
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
