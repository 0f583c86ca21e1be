import { homedir } from 'node:os'
import { ConfigError, type LoadedConfig, loadConfig, unknownKeyWarning, withRedisUrl } from '../../config/config.ts'
import { type KeptToken, keepToken, keptTokenPath } from '../../config/kept-token.ts'
import { consoleWrite, createLog, type Log } from '../../observe/logger.ts'
import { startServer } from '../../server/server.ts'
import { type Command, noPositionals, optionalInt, parse } from './_command.ts'

export const serveCommand: Command = {
  summary: 'run the server',
  usage: `moonlight serve [--config PATH] [--port N] [--host H] [--redis URL]

Starts Moonlight Server. Config: --config, $MLS_CONFIG, ./mls.json, ~/.config/moonlight/mls.json,
/etc/moonlight/mls.json, else the embedded default. SIGHUP reloads it; SIGTERM stops gracefully.
--redis URL (or $MLS_REDIS_URL) joins a cluster through that Redis (cluster.redis_url).
With no token configured, it generates one and keeps it for the next start in
$XDG_STATE_HOME/moonlight/token (default ~/.local/state/moonlight/token, mode 0600).`,
  run: async (args, env) => {
    const { values, positionals } = parse(args, { config: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, redis: { type: 'string' } })
    noPositionals(positionals)
    await serve({
      config: values.config,
      port: optionalInt(values.port, '--port'),
      host: values.host,
      redis: values.redis ?? (env.MLS_REDIS_URL || undefined),
      keptTokenPath: keptTokenPath(env, homedir()),
    })
  },
}

export interface ServeOptions {
  config?: string
  port?: number
  host?: string
  /** Overrides cluster.redis_url. */
  redis?: string
  /** Where the token generated while none is configured is kept for the next start; read or written only then. */
  keptTokenPath: string
}

/** Runs the server until SIGTERM/SIGINT; SIGHUP reloads the config. Resolves when stopped. */
export async function serve(options: ServeOptions): Promise<void> {
  const places = { explicitPath: options.config }
  const load = () => withRedisUrl(loadConfig(places), options.redis)
  const loaded = load()
  // Lines of this command go through the same log as the server's: same format, same level, as reloaded.
  let current = loaded
  const log = createLog(() => current.config.log, consoleWrite, Date.now)
  report(loaded, log)
  // Read (or written) only when no token is configured: a config that names tokens never touches the file.
  let kept: KeptToken | undefined
  const generatedToken = () => {
    kept ??= keepToken(options.keptTokenPath)
    return kept.token
  }
  const server = startServer({ loaded, port: options.port, host: options.host, generatedToken })
  let shown = false
  const showKeptToken = () => {
    if (shown || !kept || !server.settings.generatedToken) return
    shown = true
    // The one token ever printed, and not through the log: a log may be shipped elsewhere.
    console.log(`[mls] no tokens configured: ${describeKept(kept)} (set "tokens" in mls.json to choose your own):`)
    console.log(`[mls]   ${kept.token}`)
  }
  try {
    await server.ready
  } catch (error) {
    await server.stop(0)
    throw error
  }
  // The handlers are in place before the server says it is listening: a supervisor may reload or stop
  // it the moment it does, and SIGHUP's default action would end the process.
  process.on('SIGHUP', () => {
    try {
      const next = load()
      report(next, log)
      server.reload(next)
      current = next
      // A reload that leaves no token configured uses the kept one: said once, as at start-up.
      showKeptToken()
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      log(`[mls] reload rejected, the previous config stays in force:\n${error.message}`, { level: 'error' })
    }
  })
  const stopped = new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      log(`[mls] ${signal}: finishing in-flight tasks, then stopping`)
      void server.stop().then(() => {
        log('[mls] stopped')
        resolve()
      })
    }
    process.once('SIGTERM', () => shutdown('SIGTERM'))
    process.once('SIGINT', () => shutdown('SIGINT'))
  })
  const { cluster } = server
  log(
    cluster
      ? `[mls] cluster: instance ${cluster.instanceId} through ${cluster.redisUrl}, ${cluster.redisUp ? `with ${describePeers(cluster.peers().map((peer) => peer.instance_id))}` : 'Redis not reachable yet (serving alone until it is)'}`
      : '[mls] running alone (no cluster configured)',
  )
  showKeptToken()
  const { ws, html } = server.settings.config
  log(`[mls] listening on ${server.url}${ws.enabled ? ` (WebSocket ${ws.path})` : ''}`, { fields: { url: server.url } })
  // `npm start` puts npm in front of this process, and npm does not pass SIGHUP on: say where signals go.
  log(`[mls] pid ${process.pid}: kill -HUP ${process.pid} reloads the config, kill -TERM ${process.pid} stops`, { fields: { pid: process.pid } })
  if (html.enabled) log(`[mls] docs ${server.url}${html.index_path}  dashboard ${server.url}${html.dashboard_path}`)

  await stopped
}

function report(loaded: LoadedConfig, log: Log): void {
  log(`[mls] config: ${loaded.source}`)
  for (const key of loaded.unknownKeys) log(`[mls] warning: ${unknownKeyWarning(key)}`, { level: 'warn' })
}

function describePeers(peers: string[]): string {
  return peers.length === 0 ? 'no other instance yet' : peers.join(', ')
}

function describeKept(kept: KeptToken): string {
  if (kept.how === 'created') return `generated a token and kept it in ${kept.path} for the next start`
  if (kept.how === 'read') return `using the token kept in ${kept.path} at an earlier start`
  return `generated a token for this run only (could not keep it in ${kept.path}: ${kept.problem})`
}
