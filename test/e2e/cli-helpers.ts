/** Helpers for driving the `moonlight` CLI as a real subprocess: one-shot commands and long-running agents. */
import { join } from 'node:path'
import { type CliOptions, type CliProcess, cleanEnv, ROOT, SOURCE_CLI } from '../helpers.ts'

export { type CliOptions, type CliProcess, SOURCE_CLI, startCli } from '../helpers.ts'

export const BINARY = join(ROOT, 'dist/moonlight')
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
