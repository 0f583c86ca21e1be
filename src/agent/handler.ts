import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

/** What an agent answers for one task: the status, JSON value and headers the caller receives. */
export interface AgentAnswer {
  status: number
  response: unknown
  headers?: Record<string, string>
  /** false: the server must not retry this 5xx elsewhere (over WebSocket, the task_response's `retry`). */
  retry?: false
}

/** Runs one task; a thrown error becomes a 500 (or its own `status`) in `answerTask`. `signal` aborts when the task is cancelled. */
export type TaskHandler = (payload: unknown, taskId: string, signal: AbortSignal) => Promise<AgentAnswer>

/** What a `--handler` module's default export looks like: `signal` aborts when the server cancels the task. */
export type HandlerFunction = (payload: unknown, context: { taskId: string; signal: AbortSignal }) => unknown

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
export function execHandler(command: string, timeoutMs?: number): TaskHandler {
  return async (payload, taskId, signal) => {
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
    try {
      const [stdout, stderr, exitCode] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited])
      if (timedOut) return { status: 500, response: { error: `the command ran past --exec-timeout (${timeoutMs! / 1000} s) and was killed`, timed_out: true } }
      if (exitCode === 0) return { status: 200, response: parseOutput(stdout) }
      const why = child.signalCode ? `killed by ${child.signalCode}` : `exited with code ${exitCode}`
      const status = exitCode === EXEC_BAD_REQUEST_EXIT ? 400 : 500
      return { status, response: { error: stderr.trim() || `the command ${why}`, exit_code: exitCode } }
    } finally {
      clearTimeout(timer)
      signal.removeEventListener('abort', cancel)
    }
  }
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
  return async (payload, taskId, signal) => {
    const result: unknown = await (run as HandlerFunction)(payload, { taskId, signal })
    return isFullAnswer(result) ? fullAnswer(result) : { status: 200, response: result ?? null }
  }
}

/** What a handler returns to choose its own status and headers: `{ status, headers?, body }` and no other keys. */
interface FullAnswer {
  status: number
  headers?: Record<string, string>
  body: unknown
  retry?: boolean
}

const FULL_ANSWER_KEYS = new Set(['status', 'headers', 'body', 'retry'])

/**
 * A result is a full answer only if it has exactly that shape (a numeric status 200-599 and a body,
 * nothing else): a handler that returns its data, say `{status: "completed", result}`, is not taken
 * for one.
 */
function isFullAnswer(result: unknown): result is FullAnswer {
  if (typeof result !== 'object' || result === null || Array.isArray(result)) return false
  const { status, headers } = result as Record<string, unknown>
  return (
    Number.isInteger(status) &&
    (status as number) >= 200 &&
    (status as number) <= 599 &&
    Object.hasOwn(result, 'body') &&
    Object.keys(result).every((key) => FULL_ANSWER_KEYS.has(key)) &&
    (headers === undefined || (typeof headers === 'object' && headers !== null && Object.values(headers).every((value) => typeof value === 'string')))
  )
}

function fullAnswer(result: FullAnswer): AgentAnswer {
  return {
    status: result.status,
    response: result.body ?? null,
    ...(result.headers === undefined ? {} : { headers: result.headers }),
    ...(result.retry === false ? { retry: false as const } : {}),
  }
}

/** A thrown error's own `status` (400-599), if it carries one: `Object.assign(new Error('no such user'), { status: 404 })`. */
function statusOf(error: unknown): number | undefined {
  const status = (error as { status?: unknown } | null)?.status
  return Number.isInteger(status) && (status as number) >= 400 && (status as number) <= 599 ? (status as number) : undefined
}

/** An answer ready to send: the status, the response already serialized, and what else the handler chose. */
export interface ReadyAnswer {
  status: number
  json: string
  headers?: Record<string, string>
  retry?: false
}

/**
 * Runs a task to an answer that can always be sent: a thrown error is a 500 carrying the reason, or
 * the error's own `status` (a 4xx reaches the caller as-is and is not retried), and `retry: false`
 * on it asks the server not to retry; a result that is not JSON (a BigInt, a cycle) is a 500.
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
    const noRetry = (error as { retry?: unknown } | null)?.retry === false ? { retry: false as const } : {}
    answer = { status: statusOf(error) ?? 500, response: { error: messageOf(error) }, ...noRetry }
  }
  try {
    const extra = { ...(answer.headers === undefined ? {} : { headers: answer.headers }), ...(answer.retry === false ? { retry: false as const } : {}) }
    return { status: answer.status, json: JSON.stringify(answer.response) ?? 'null', ...extra }
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
