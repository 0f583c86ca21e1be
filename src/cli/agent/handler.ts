import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { TaskHandler } from '../../../packages/sdk/src/handler.ts'

/** A handler could not be set up (bad module, nothing to run): the agent does not start. */
export class HandlerSetupError extends Error {
  override name = 'HandlerSetupError'
}

/** The exit code by which an `--exec` command says "the payload is wrong": a 400, passed to the caller and not retried. */
export const EXEC_BAD_REQUEST_EXIT = 2

/**
 * `--exec COMMAND`: runs `sh -c COMMAND` per task with the payload JSON on stdin and $MLS_TASK_ID set.
 * Its stdout is the response (parsed as JSON when it is JSON, else the text as a JSON string);
 * exit 0 → 200, exit 2 → 400 with stderr as the error (the payload's fault), anything else → 500.
 * With `timeoutMs` a command still running then is killed, with everything it started: 500.
 */
export function execHandler(command: string, timeoutMs?: number, maxOutputBytes = EXEC_MAX_STDOUT_BYTES): TaskHandler {
  return async (payload, { taskId, signal }) => {
    const child = Bun.spawn(['sh', '-c', command], {
      stdin: new Blob([JSON.stringify(payload) ?? 'null']),
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, MLS_TASK_ID: taskId },
      // Its own process group, so a kill (a cancel, --exec-timeout) reaches what the shell started too
      // (a grandchild would keep the pipes open).
      detached: true,
    })
    let timedOut = false
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true
            killGroup(child, 'SIGKILL')
          }, timeoutMs)
    const cancel = () => killGroup(child, 'SIGTERM')
    if (signal.aborted) cancel()
    else signal.addEventListener('abort', cancel, { once: true })
    let tooLarge = false
    const overflow = () => {
      tooLarge = true
      killGroup(child, 'SIGKILL')
    }
    try {
      const [stdout, stderr, exitCode] = await Promise.all([
        readCapped(child.stdout, maxOutputBytes, overflow),
        readCapped(child.stderr, EXEC_MAX_STDERR_BYTES),
        child.exited,
      ])
      if (timedOut) return { status: 500, body: { error: `the command ran past --exec-timeout (${timeoutMs! / 1000} s) and was killed`, timed_out: true } }
      if (tooLarge)
        return { status: 500, body: { error: `the command's output passed --exec-max-output (${maxOutputBytes} bytes) and it was killed`, too_large: true } }
      if (exitCode === 0) return { status: 200, body: parseOutput(stdout) }
      const why = child.signalCode ? `killed by ${child.signalCode}` : `exited with code ${exitCode}`
      const status = exitCode === EXEC_BAD_REQUEST_EXIT ? 400 : 500
      return { status, body: { error: stderr.trim() || `the command ${why}`, exit_code: exitCode } }
    } finally {
      clearTimeout(timer)
      signal.removeEventListener('abort', cancel)
    }
  }
}

const MIB = 1024 * 1024
/**
 * The most of an --exec command's stdout the agent holds by default (--exec-max-output): the server's
 * default max_answer_bytes, past which it would refuse the answer (and drop the agent's connection)
 * anyway. Past it the command is killed: one that prints without end (`yes`) would otherwise fill the
 * agent's memory.
 */
export const EXEC_MAX_STDOUT_BYTES = 16 * MIB
/** Of stderr (the error message) only the start is kept; the rest is read and dropped, so the command is not blocked writing it. */
export const EXEC_MAX_STDERR_BYTES = 64 * 1024

/** A stream's text, at most `maxBytes` of it; past that the rest is drained unkept and `onOver` is called once. */
async function readCapped(stream: ReadableStream<Uint8Array>, maxBytes: number, onOver?: () => void): Promise<string> {
  const kept: Uint8Array[] = []
  let total = 0
  let over = false
  const reader = stream.getReader()
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    const chunk = read.value
    if (total < maxBytes) kept.push(chunk.subarray(0, maxBytes - total))
    total += chunk.length
    if (total > maxBytes && !over) {
      over = true
      onOver?.()
    }
  }
  return Buffer.concat(kept).toString('utf8')
}

/** A signal to the child's process group (it leads one: spawned detached); the child alone if the group is gone. */
function killGroup(child: { pid: number; kill(signal?: number | NodeJS.Signals): void }, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid, signal)
  } catch {
    // The group has already ended; the child itself may not have been reaped yet.
    child.kill(signal)
  }
}

/** `--handler FILE`: imports the module once; its default export is called per task. */
export async function moduleHandler(file: string): Promise<TaskHandler> {
  const path = resolve(file)
  let module: { default?: unknown }
  try {
    module = (await import(pathToFileURL(path).href)) as { default?: unknown }
  } catch (error) {
    throw new HandlerSetupError(`cannot load --handler ${file}: ${(error as Error).message}`)
  }
  const run = module.default
  if (typeof run !== 'function') throw new HandlerSetupError(`--handler ${file} must have a default export: async (payload) => result`)
  // The SDK's rules apply to what it returns or throws, as for any handler written with the SDK.
  return run as TaskHandler
}

/** JSON output is the response as it is; anything else is text, sent as a JSON string. */
function parseOutput(stdout: string): unknown {
  if (stdout.trim() === '') return null
  try {
    return JSON.parse(stdout)
  } catch {
    // A single trailing newline is how shells end output, not part of the answer.
    return stdout.replace(/\r?\n$/, '')
  }
}
