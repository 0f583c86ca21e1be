import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

/** What an agent answers for one task: the status and JSON value the caller receives. */
export interface AgentAnswer {
  status: number
  response: unknown
}

/** Runs one task; a thrown error becomes a 500 in `answerTask`. `signal` aborts when the task is cancelled. */
export type TaskHandler = (payload: unknown, taskId: string, signal: AbortSignal) => Promise<AgentAnswer>

/** What a `--handler` module's default export looks like: `signal` aborts when the server cancels the task. */
export type HandlerFunction = (payload: unknown, context: { taskId: string; signal: AbortSignal }) => unknown

/** A handler could not be set up (bad module, nothing to run): the agent does not start. */
export class HandlerSetupError extends Error {
  override name = 'HandlerSetupError'
}

/**
 * `--exec COMMAND`: runs `sh -c COMMAND` per task with the payload JSON on stdin and $MLS_TASK_ID set.
 * Its stdout is the response (parsed as JSON when it is JSON, else the text as a JSON string);
 * exit 0 → 200, anything else → 500 with stderr as the error.
 */
export function execHandler(command: string): TaskHandler {
  return async (payload, taskId, signal) => {
    const child = Bun.spawn(['sh', '-c', command], {
      stdin: new Blob([JSON.stringify(payload) ?? 'null']),
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, MLS_TASK_ID: taskId },
      // Its own process group, so that a cancel stops what the shell started too, not just the shell.
      detached: true,
    })
    const stop = () => {
      try {
        process.kill(-child.pid, 'SIGTERM')
      } catch {
        child.kill('SIGTERM')
      }
    }
    if (signal.aborted) stop()
    else signal.addEventListener('abort', stop, { once: true })
    const [stdout, stderr, exitCode] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited])
    if (exitCode === 0) return { status: 200, response: parseOutput(stdout) }
    const why = child.signalCode ? `killed by ${child.signalCode}` : `exited with code ${exitCode}`
    return { status: 500, response: { error: stderr.trim() || `the command ${why}`, exit_code: exitCode } }
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
  return async (payload, taskId, signal) => {
    const result: unknown = await (run as HandlerFunction)(payload, { taskId, signal })
    return { status: 200, response: result ?? null }
  }
}

/** An answer ready to send: the status and the response already serialized. */
export interface ReadyAnswer {
  status: number
  json: string
}

/**
 * Runs a task to an answer that can always be sent: whatever the handler throws, or a result that
 * is not JSON (a BigInt, a cycle), is a 500 carrying the reason.
 */
export async function answerTask(
  handler: TaskHandler,
  payload: unknown,
  taskId: string,
  signal: AbortSignal = new AbortController().signal,
): Promise<ReadyAnswer> {
  let answer: AgentAnswer
  try {
    answer = await handler(payload, taskId, signal)
  } catch (error) {
    answer = { status: 500, response: { error: messageOf(error) } }
  }
  try {
    return { status: answer.status, json: JSON.stringify(answer.response) ?? 'null' }
  } catch (error) {
    return { status: 500, json: JSON.stringify({ error: `the handler's result cannot be sent as JSON: ${messageOf(error)}` }) }
  }
}

/** One line on why a task failed, for the agent's log. */
export function describeFailure(answer: ReadyAnswer): string {
  let error: unknown = answer.json
  try {
    const parsed: unknown = JSON.parse(answer.json)
    error = parsed && typeof parsed === 'object' && 'error' in parsed ? parsed.error : parsed
  } catch {
    // answerTask always makes JSON; the raw text would do anyway.
  }
  return (typeof error === 'string' ? error : (JSON.stringify(error) ?? '')).replace(/\s+/g, ' ').slice(0, 200)
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
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
