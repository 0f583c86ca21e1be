import { readFileSync } from 'node:fs'
import { acceptedTaskSchema, taskViewSchema } from '../../wire/async-task.ts'
import { type RetryOn, retryOnSchema } from '../../wire/errors.ts'
import { prioritySchema } from '../../wire/names.ts'
import { type BroadcastReply, broadcastReplySchema } from '../../wire/task.ts'
import { cancelTask, errorMessage, fetchTaskResult, RequestFailed, type ServerTarget, submitTask, VIEW_TIMEOUT_S } from '../api-client.ts'
import { type Command, caOf, type Env, noPositionals, optionalInt, optionalSeconds, parse, readViewArgs, serverUrl, tokenOf, UsageError } from './_command.ts'
import { printBody, printJson } from './_output.ts'
import { withSpinner } from './_spinner.ts'

export const taskCommand: Command = {
  summary: 'submit a task and print the answer',
  usage: `moonlight task [--server URL] [--token T] [--region R] (--payload JSON | --payload-file F | stdin)
               [--broadcast | --async [--json]] [--idempotency-key K] [--timeout S] [--ca FILE]
               [--key K] [--node-id ID] [--fallback parent|none] [--no-retry | --retry] [--retry-on LIST]
               [--task-timeout S] [--priority high|normal|low] [--queue-timeout S] [--max-answer-bytes N]
       moonlight task get ID [--wait S] [--timeout S] [--max-answer-bytes N]    the answer of an async task
       moonlight task cancel ID [--json] [--timeout S]   cancel an async task

Submits a task to POST /task/request and prints the agent's answer: pretty JSON on a terminal,
exactly as sent when piped. Exits 1 with the server's error message on any error status.
With --async, prints the task's id at once; \`task get ID\` prints its answer once it is done
(exit 3 while it is still queued or running), \`task cancel ID\` cancels it.

  --server URL         the server's base URL (default $MLS_SERVER, else http://localhost:8080)
  --token T            a task token (default $MLS_TOKEN)
  --region R           the region to run in (default: any agent)
  --payload JSON       the payload, a JSON value
  --payload-file F     read the payload from file F ("-" for stdin)
  --broadcast          send to every agent under the region; exits 1 if any of them failed
  --async              submit and print the task id; fetch the answer later with \`task get ID\`
  --json               (--async, task cancel) print the server's JSON instead of a line
  --idempotency-key K  a retry with the same key and payload returns the first answer, never runs twice
  --wait S             (task get) wait up to S seconds (at most 60) for the task to finish
  --timeout S          give up after S seconds (task get: after its --wait and S more; task get and
                       task cancel: 10 s by default; a task submitted: no default, the server's task_timeout bounds it)
  --ca FILE            a PEM CA bundle to verify an https:// server against (default $MLS_CA)
  --max-answer-bytes N (task, task get) read at most N bytes of the answer, once unpacked (default
                       67108864, 64 MiB); past it, exit 1 without the answer

Routing (docs/routing.md):
  --key K              sticky routing: tasks with the same key go to the same agent while it is eligible
  --node-id ID         exactly this agent (404 if unknown, 503 if ejected or draining); not retried
                       unless --retry
  --fallback P         "parent" (climb the hierarchy when the region has no agent) or "none" (never
                       leave the region); default: the server's routing.fallback
  --no-retry           one attempt only, for work that must never run twice
  --retry              allow retries (with --node-id: on that agent again)
  --retry-on LIST      the failures a retry may follow, comma-separated: unreachable (the agent never
                       got the task), lost (sent, no answer came back: it may have run), status (a 5xx);
                       narrower than the server's routing.retry_on. "unreachable": never sent twice
  --task-timeout S     the server gives up after S seconds (at most its task_timeout) and answers 504
  --priority P         high, normal or low: its class while it waits for an agent's slot (default normal)
  --queue-timeout S    wait at most S seconds for a slot, then 503 queue_timeout (default: queue.timeout)

With neither --payload nor --payload-file, the payload is read from stdin.`,
  run: runTask,
}

async function runTask(args: string[], env: Env): Promise<number> {
  const [first, taskId, ...rest] = args
  if (first === 'get' || first === 'cancel') {
    // A task is submitted with flags only: a first word "get" or "cancel" is always the action.
    if (taskId === undefined || taskId.startsWith('-')) throw new UsageError(`task ${first} needs the task id: moonlight task ${first} ID`)
    return first === 'get' ? runGet(taskId, rest, env) : runCancel(taskId, rest, env)
  }
  const { values, positionals } = parse(args, {
    server: { type: 'string' },
    token: { type: 'string' },
    region: { type: 'string' },
    payload: { type: 'string' },
    'payload-file': { type: 'string' },
    broadcast: { type: 'boolean' },
    async: { type: 'boolean' },
    json: { type: 'boolean' },
    'idempotency-key': { type: 'string' },
    timeout: { type: 'string' },
    ca: { type: 'string' },
    'max-answer-bytes': { type: 'string' },
    key: { type: 'string' },
    'node-id': { type: 'string' },
    fallback: { type: 'string' },
    retry: { type: 'boolean' },
    'no-retry': { type: 'boolean' },
    'retry-on': { type: 'string' },
    'task-timeout': { type: 'string' },
    priority: { type: 'string' },
    'queue-timeout': { type: 'string' },
  })
  noPositionals(positionals)
  if (values.broadcast && values.async) throw new UsageError('--broadcast and --async do not go together')
  const target = { ...targetOf(values, env), maxAnswerBytes: maxAnswerBytesOf(values['max-answer-bytes']) }
  const timeoutS = optionalSeconds(values.timeout, '--timeout')
  const payload = await readPayload(values.payload, values['payload-file'])
  const fields = {
    ...(values.region === undefined ? {} : { region: values.region }),
    ...(values.broadcast ? { mode: 'broadcast' } : values.async ? { mode: 'async' } : {}),
    ...routingFields(values),
  }
  // The payload goes as the text it was given (validated as JSON, never re-serialized): big integers keep their digits.
  const body = `${JSON.stringify(fields).slice(0, -1)}${Object.keys(fields).length > 0 ? ',' : ''}"payload":${payload}}`

  const key = values['idempotency-key']
  const submission = submitTask(target, body, timeoutS === undefined ? undefined : timeoutS * 1000, key === undefined ? {} : { 'idempotency-key': key })
  const answer = values.async ? await submission : await withSpinner(values.broadcast ? 'waiting for every agent…' : 'waiting for the answer…', submission)
  if (values.broadcast) return reportBroadcast(answer)
  if (values.async) {
    if (answer.status !== 202) throw new RequestFailed(withHint(errorMessage(answer), answer.status, target.token), answer.status)
    const accepted = acceptedTaskSchema.safeParse(jsonOf(answer.body))
    if (!accepted.success) throw new RequestFailed(unexpected('an async task', answer.status), answer.status)
    if (values.json) printJson(accepted.data)
    else console.log(accepted.data.task_id)
    return 0
  }
  if (answer.status >= 400) throw new RequestFailed(withHint(errorMessage(answer), answer.status, target.token), answer.status)
  printBody(answer)
  return 0
}

/** Exit code of \`task get\` while the task has not finished. */
const NOT_YET = 3

async function runGet(taskId: string, args: string[], env: Env): Promise<number> {
  const { values, positionals } = parse(args, {
    server: { type: 'string' },
    token: { type: 'string' },
    wait: { type: 'string' },
    timeout: { type: 'string' },
    ca: { type: 'string' },
    'max-answer-bytes': { type: 'string' },
  })
  noPositionals(positionals)
  const waitS = optionalSeconds(values.wait, '--wait')
  if (waitS !== undefined && waitS > 60) throw new UsageError('--wait must be at most 60 seconds')
  // A server that never answers must not hold a script for ever: the long poll's --wait, then --timeout more.
  const timeoutS = (waitS ?? 0) + (optionalSeconds(values.timeout, '--timeout') ?? VIEW_TIMEOUT_S)
  const target = { ...targetOf(values, env), maxAnswerBytes: maxAnswerBytesOf(values['max-answer-bytes']) }
  const fetching = fetchTaskResult(target, taskId, waitS, timeoutS * 1000)
  const answer = waitS === undefined ? await fetching : await withSpinner('waiting for the task…', fetching)
  if (answer.status === 202) {
    const view = taskViewSchema.safeParse(jsonOf(answer.body))
    // Exit 3 tells a script to ask again: only a real task view may say so, not a proxy's page.
    if (!view.success) throw new RequestFailed(unexpected('task get', answer.status), answer.status)
    console.error(`moonlight task: task ${taskId} is ${view.data.state}; ask again later${waitS === undefined ? ', or pass --wait S' : ''}`)
    return NOT_YET
  }
  if (answer.status >= 400) throw new RequestFailed(withHint(errorMessage(answer), answer.status, target.token), answer.status)
  printBody(answer)
  return 0
}

async function runCancel(taskId: string, args: string[], env: Env): Promise<number> {
  const { target, timeoutMs, json } = readViewArgs(args, env)
  const answer = await cancelTask(target, taskId, timeoutMs)
  // "cancelled" only on the server's word: a task view. A proxy's 200 page is not one, nor is JSON nested past the stack.
  const view = taskViewSchema.loose().safeParse(jsonOf(answer.body))
  if (!view.success) throw new RequestFailed(unexpected('task cancel', answer.status), answer.status)
  if (json) printJson(view.data)
  else console.log(`cancelled ${taskId}`)
  return 0
}

/** --server, --token and --ca as the target to ask. */
function targetOf(values: { server?: string; token?: string; ca?: string }, env: Env): ServerTarget {
  return { server: serverUrl(values.server, env), token: tokenOf(values.token, env), ca: caOf(values.ca, env) }
}

/** --max-answer-bytes: a whole number of bytes, at least 1; undefined for the default. */
function maxAnswerBytesOf(flag: string | undefined): number | undefined {
  const bytes = optionalInt(flag, '--max-answer-bytes')
  if (bytes === 0) throw new UsageError('--max-answer-bytes must be at least 1')
  return bytes
}

/** The routing flags as the request's fields; the server validates them (a bad one is its 400, with the field named). */
function routingFields(values: {
  key?: string
  'node-id'?: string
  fallback?: string
  retry?: boolean
  'no-retry'?: boolean
  'retry-on'?: string
  'task-timeout'?: string
  priority?: string
  'queue-timeout'?: string
}): Record<string, unknown> {
  if (values.retry && values['no-retry']) throw new UsageError('pass --retry or --no-retry, not both')
  if (values.fallback !== undefined && values.fallback !== 'parent' && values.fallback !== 'none')
    throw new UsageError(`--fallback must be "parent" or "none", got "${values.fallback}"`)
  const timeoutS = optionalSeconds(values['task-timeout'], '--task-timeout')
  const retryOn = retryOnList(values['retry-on'])
  const queueTimeoutS = optionalSeconds(values['queue-timeout'], '--queue-timeout')
  const priority = values.priority === undefined ? undefined : prioritySchema.safeParse(values.priority)
  if (priority !== undefined && !priority.success) throw new UsageError(`--priority must be high, normal or low, got "${values.priority}"`)
  return {
    ...(values.key === undefined ? {} : { key: values.key }),
    ...(values['node-id'] === undefined ? {} : { node_id: values['node-id'] }),
    ...(values.fallback === undefined ? {} : { fallback: values.fallback }),
    ...(values.retry ? { retry: true } : values['no-retry'] ? { retry: false } : {}),
    ...(retryOn === undefined ? {} : { retry_on: retryOn }),
    ...(timeoutS === undefined ? {} : { timeout: timeoutS }),
    ...(priority === undefined ? {} : { priority: priority.data }),
    ...(queueTimeoutS === undefined ? {} : { queue_timeout: queueTimeoutS }),
  }
}

/** `--retry-on a,b` as the list; "" is the empty list (no retry after any failure). */
function retryOnList(flag: string | undefined): RetryOn[] | undefined {
  if (flag === undefined) return undefined
  const names = flag
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '')
  return names.map((name) => {
    const parsed = retryOnSchema.safeParse(name)
    if (!parsed.success) throw new UsageError(`--retry-on takes unreachable, lost and status, comma-separated; got "${name}"`)
    return parsed.data
  })
}

/** The payload from exactly one source; it must be JSON, since the agent receives it parsed. */
async function readPayload(inline: string | undefined, file: string | undefined): Promise<string> {
  if (inline !== undefined && file !== undefined) throw new UsageError('give the payload with --payload or --payload-file, not both')
  if (inline !== undefined) return parsePayload(inline, '--payload')
  if (file !== undefined && file !== '-') {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (error) {
      throw new UsageError(`cannot read --payload-file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
    }
    return parsePayload(text, file)
  }
  if (file === undefined && process.stdin.isTTY) {
    throw new UsageError('no payload: pass --payload JSON, --payload-file F, or pipe JSON on stdin')
  }
  return parsePayload(await Bun.stdin.text(), 'stdin')
}

function parsePayload(text: string, source: string): string {
  if (text.trim() === '') throw new UsageError(`the payload from ${source} is empty`)
  try {
    JSON.parse(text)
    return text.trim()
  } catch (error) {
    throw new UsageError(`the payload from ${source} is not valid JSON (${(error as Error).message}); quote a string as '"text"'`)
  }
}

/** A broadcast's results are data even when some failed: print them, then fail if any did. */
function reportBroadcast(answer: Awaited<ReturnType<typeof submitTask>>): number {
  let results: BroadcastReply['results'] | undefined
  try {
    // Read with the server's own schema of the reply; anything else (a proxy's error page) is reported below.
    const parsed = broadcastReplySchema.safeParse(JSON.parse(answer.body))
    if (parsed.success) results = parsed.data.results
  } catch {
    // Not JSON at all: reported below as an error status.
  }
  if (!results) {
    if (answer.status >= 400) throw new RequestFailed(errorMessage(answer), answer.status)
    throw new RequestFailed(`unexpected answer to a broadcast (HTTP ${answer.status})`, answer.status)
  }
  printBody(answer)
  const failed = results.filter((result) => result.error !== undefined || result.status >= 400).length
  if (failed === 0) return 0
  throw new RequestFailed(`${failed} of ${results.length} agents failed the broadcast`, answer.status)
}

/** A body as JSON, or undefined when it is not JSON (a proxy's HTML page): the caller says so in one line, not with the parser's error. */
function jsonOf(body: string): unknown {
  try {
    return JSON.parse(body)
  } catch {
    return undefined
  }
}

function unexpected(what: string, status: number): string {
  return `unexpected answer to ${what} (HTTP ${status}): is this a Moonlight server?`
}

/** The server's 401 speaks HTTP headers; a shell user needs the flag. */
function withHint(message: string, status: number, token: string | undefined): string {
  if (status !== 401) return message
  return token ? `${message}; the token given by --token or $MLS_TOKEN was refused` : `${message}; pass --token or set MLS_TOKEN`
}
