import { hostname } from 'node:os'
import { DEFAULT_CONCURRENCY } from '../../../packages/sdk/src/agent.ts'
import type { TaskHandler } from '../../../packages/sdk/src/handler.ts'
import { type CertificatePair, readCertificatePair, TlsFileError } from '../../security/pem-files.ts'
import { type Agent, startCliAgent } from '../agent/agent.ts'
import { execHandler, HandlerSetupError, moduleHandler } from '../agent/handler.ts'
import { type Command, caOf, type Env, noPositionals, optionalInt, optionalSeconds, parse, serverUrl, tokenOf, UsageError } from './_command.ts'

/** As the server's signing_secret: long enough that guessing it is not the easy way in. */
const MIN_SIGNING_SECRET_CHARS = 16

export const agentCommand: Command = {
  summary: 'run an agent that answers tasks',
  usage: `moonlight agent --server URL --token T --region R (--exec "COMMAND" [--exec-timeout S] | --handler FILE)
                [--node-id ID] [--weight W] [--concurrency N] [--no-slots] [--ca FILE]
                [--http PORT [--ip IP] [--tls-cert F --tls-key F] [--signing-secret S]]

A ready-made agent. It connects to the server over WebSocket, registers, and answers each task:

  --exec "COMMAND"    run "sh -c COMMAND" per task with the payload JSON on stdin ($MLS_TASK_ID is set);
                      its stdout is the answer (JSON, or text sent as a JSON string); exit 0 → status 200,
                      exit 2 → 400 (the payload's fault: passed to the caller, not retried), any other
                      exit → 500; stderr is the error (its first 64 KiB); a stdout past
                      --exec-max-output kills the command: 500
  --exec-timeout S    (--exec) kill a command still running after S seconds, and what it started: 500
  --exec-max-output N (--exec) the most bytes of stdout taken (default 16777216, the server's default
                      max_answer_bytes; raise both together)
  --handler FILE      import FILE (.ts or .js); its default export "async (payload) => result" answers,
                      or returns {status, headers, body} to choose the status; a throw → 500 with the
                      message, or the error's own "status" (a 4xx is not retried)

  --server URL        the server's base URL (default $MLS_SERVER, else http://localhost:8080); several
                      (a cluster's instances: --server URL1,URL2 or repeated) are tried in turn;
                      the WebSocket URL is derived from it (http → ws, https → wss) plus --ws-path
  --token T           a token the server accepts (default $MLS_TOKEN)
  --region R          the region this agent serves
  --node-id ID        a unique name (default <hostname>-<pid>)
  --weight W          its share of tasks, 0-1000 (default 1; 0 = none)
  --concurrency N     tasks run at once; more wait their turn (default ${DEFAULT_CONCURRENCY}); announced
                      to the server as the agent's slots (max_in_flight), so it never sends more at once
  --no-slots          do not announce --concurrency: the server sends tasks regardless, they wait here
  --ws-path PATH      the server's WebSocket path (default /ws)
  --ca FILE           a PEM CA bundle to verify an https:// server against (default $MLS_CA)
  --http PORT         be an HTTP agent instead: serve POST /work on PORT and register by heartbeat
  --ip IP             (--http) the address the server should call (default: the one it sees)
  --heartbeat S       (--http) seconds between heartbeats (default: a third of the server's client_ttl)
  --tls-cert F        (--http) serve /work over HTTPS with this PEM certificate chain (and --tls-key),
  --tls-key F         and register with "scheme": "https"
  --signing-secret S  (--http) run only calls signed with the server's signing_secret; anything else
                      gets 401 (default $MLS_SIGNING_SECRET)

It reconnects with backoff when the server goes away and registers again. On SIGTERM or SIGINT it
takes no new tasks, finishes the ones it holds, then exits; a second signal exits at once. An HTTP
agent first waits (5 s at most) for the server to answer its weight 0, and logs it if none does.`,
  run: runAgent,
}

async function runAgent(args: string[], env: Env): Promise<number> {
  const { values, positionals } = parse(args, {
    server: { type: 'string', multiple: true },
    token: { type: 'string' },
    region: { type: 'string' },
    'node-id': { type: 'string' },
    weight: { type: 'string' },
    concurrency: { type: 'string' },
    'no-slots': { type: 'boolean' },
    exec: { type: 'string' },
    'exec-timeout': { type: 'string' },
    'exec-max-output': { type: 'string' },
    handler: { type: 'string' },
    'ws-path': { type: 'string' },
    http: { type: 'string' },
    ip: { type: 'string' },
    heartbeat: { type: 'string' },
    ca: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'signing-secret': { type: 'string' },
  })
  noPositionals(positionals)
  // --server URL1,URL2 or --server repeated: a cluster's instances, tried in turn.
  const listed = (values.server ?? (env.MLS_SERVER ? [env.MLS_SERVER] : []))
    .flatMap((each) => each.split(','))
    .map((each) => each.trim())
    .filter(Boolean)
  const servers = (listed.length > 0 ? listed : [undefined]).map((each) => serverUrl(each, env))
  const token = tokenOf(values.token, env)
  if (!token) throw new UsageError('an agent needs a token: pass --token or set MLS_TOKEN')
  if (!values.region) throw new UsageError('pass --region R: the region this agent serves')
  const weight = optionalInt(values.weight, '--weight')
  const concurrency = optionalInt(values.concurrency, '--concurrency') ?? DEFAULT_CONCURRENCY
  if (concurrency < 1) throw new UsageError('--concurrency must be at least 1')
  const httpPort = optionalInt(values.http, '--http')
  if (httpPort === undefined && (values.ip !== undefined || values.heartbeat !== undefined))
    throw new UsageError('--ip and --heartbeat apply to HTTP agents (--http PORT)')
  const heartbeatS = optionalSeconds(values.heartbeat, '--heartbeat')
  if (httpPort === undefined && (values['tls-cert'] ?? values['tls-key'] ?? values['signing-secret']) !== undefined)
    throw new UsageError('--tls-cert, --tls-key and --signing-secret apply to HTTP agents (--http PORT)')
  const tls = agentCertificate(values['tls-cert'], values['tls-key'])
  const signingSecret = values['signing-secret'] ?? (env.MLS_SIGNING_SECRET || undefined)
  if (signingSecret !== undefined && signingSecret.length < MIN_SIGNING_SECRET_CHARS)
    throw new UsageError(`the signing secret must be at least ${MIN_SIGNING_SECRET_CHARS} characters, as the server's signing_secret`)
  const execTimeoutS = optionalSeconds(values['exec-timeout'], '--exec-timeout')
  if (execTimeoutS !== undefined && values.exec === undefined) throw new UsageError('--exec-timeout applies to --exec "COMMAND"')
  const execMaxOutput = optionalInt(values['exec-max-output'], '--exec-max-output')
  if (execMaxOutput !== undefined && values.exec === undefined) throw new UsageError('--exec-max-output applies to --exec "COMMAND"')
  if (execMaxOutput === 0) throw new UsageError('--exec-max-output must be at least 1 byte')
  const wsPath = values['ws-path'] ?? '/ws'
  if (!wsPath.startsWith('/')) throw new UsageError(`--ws-path must start with "/", got "${wsPath}"`)

  const agent = startCliAgent({
    servers,
    token,
    region: values.region,
    nodeId: values['node-id'] ?? `${hostname()}-${process.pid}`,
    weight,
    ca: caOf(values.ca, env),
    handler: await chooseHandler(values.exec, values.handler, execTimeoutS === undefined ? undefined : execTimeoutS * 1000, execMaxOutput),
    concurrency,
    announceSlots: values['no-slots'] !== true,
    wsPath,
    log: (line) => console.log(line),
    warn: (line) => console.error(line),
    http:
      httpPort === undefined
        ? undefined
        : { port: httpPort, ip: values.ip, heartbeatIntervalMs: heartbeatS === undefined ? undefined : heartbeatS * 1000, tls, signingSecret },
  })
  return serveUntilStopped(agent)
}

/** --tls-cert and --tls-key, together or not at all, read and checked before the agent starts. */
function agentCertificate(certPath: string | undefined, keyPath: string | undefined): CertificatePair | undefined {
  if (certPath === undefined && keyPath === undefined) return undefined
  if (certPath === undefined || keyPath === undefined) throw new UsageError('pass both --tls-cert F and --tls-key F to serve /work over HTTPS')
  try {
    return readCertificatePair(certPath, keyPath, '--tls-cert', '--tls-key')
  } catch (error) {
    if (error instanceof TlsFileError) throw new UsageError(error.message)
    throw error
  }
}

async function chooseHandler(
  command: string | undefined,
  file: string | undefined,
  execTimeoutMs: number | undefined,
  execMaxOutput: number | undefined,
): Promise<TaskHandler> {
  if ((command === undefined) === (file === undefined)) throw new UsageError('pass exactly one of --exec "COMMAND" or --handler FILE')
  if (command !== undefined) return execHandler(command, execTimeoutMs, execMaxOutput)
  try {
    return await moduleHandler(file!)
  } catch (error) {
    // A handler that cannot load is a mistake in the command line, not a server failure.
    if (error instanceof HandlerSetupError) throw new UsageError(error.message)
    throw error
  }
}

/** Runs the agent; the first SIGTERM/SIGINT drains it, a second one gives up on the held tasks. */
async function serveUntilStopped(agent: Agent): Promise<number> {
  let forced: (code: number) => void = () => {}
  const forcedExit = new Promise<number>((resolve) => (forced = resolve))
  let signals = 0
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      console.error(`[agent] ${signal} again: exiting without ${agent.held} held task(s)`)
      forced(1)
      return
    }
    console.log(`[agent] ${signal}: taking no new tasks, finishing ${agent.held} held task(s), then exiting`)
    void agent.stop()
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  try {
    return await Promise.race([agent.done.then(() => 0), forcedExit])
  } finally {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
  }
}
