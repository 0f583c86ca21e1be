import { ConfigError, type LoadedConfig, loadConfig, withRedisUrl } from '../config.ts'
import { startServer } from '../server.ts'
import { type Command, noPositionals, optionalInt, parse } from './_command.ts'

export const serveCommand: Command = {
  summary: 'run the server',
  usage: `moonlight serve [--config PATH] [--port N] [--host H] [--redis URL]

Starts Moonlight Server. Config: --config, $MLS_CONFIG, ./mls.json, ~/.config/moonlight/mls.json,
/etc/moonlight/mls.json, else the embedded default. SIGHUP reloads it; SIGTERM stops gracefully.
--redis URL (or $MLS_REDIS_URL) joins a cluster through that Redis (cluster.redis_url).`,
  run: async (args, env) => {
    const { values, positionals } = parse(args, { config: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, redis: { type: 'string' } })
    noPositionals(positionals)
    await serve({ config: values.config, port: optionalInt(values.port, '--port'), host: values.host, redis: values.redis ?? (env.MLS_REDIS_URL || undefined) })
  },
}

export interface ServeOptions {
  config?: string
  port?: number
  host?: string
  /** Overrides cluster.redis_url. */
  redis?: string
}

/** Runs the server until SIGTERM/SIGINT; SIGHUP reloads the config. Resolves when stopped. */
export async function serve(options: ServeOptions): Promise<void> {
  const places = { explicitPath: options.config }
  const load = () => withRedisUrl(loadConfig(places), options.redis)
  const loaded = load()
  report(loaded)
  const server = startServer({ loaded, port: options.port, host: options.host })
  try {
    await server.ready
  } catch (error) {
    await server.stop(0)
    throw error
  }
  const { cluster } = server
  console.log(
    cluster
      ? `[mls] cluster: instance ${cluster.instanceId} through ${cluster.redisUrl}, ${cluster.redisUp ? `with ${describePeers(cluster.peers().map((peer) => peer.instance_id))}` : 'Redis not reachable yet (serving alone until it is)'}`
      : '[mls] running alone (no cluster configured)',
  )
  if (server.settings.generatedToken) {
    console.log(`[mls] no tokens configured: generated this one for this run (set "tokens" in mls.json to choose your own):`)
    console.log(`[mls]   ${server.settings.generatedToken}`)
  }
  const { ws, html } = server.settings.config
  console.log(`[mls] listening on ${server.url}${ws.enabled ? ` (WebSocket ${ws.path})` : ''}`)
  // `npm start` puts npm in front of this process, and npm does not pass SIGHUP on: say where signals go.
  console.log(`[mls] pid ${process.pid}: kill -HUP ${process.pid} reloads the config, kill -TERM ${process.pid} stops`)
  if (html.enabled) console.log(`[mls] docs ${server.url}${html.index_path}  dashboard ${server.url}${html.dashboard_path}`)

  process.on('SIGHUP', () => {
    try {
      const next = load()
      report(next)
      server.reload(next)
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      console.error(`[mls] reload rejected, the previous config stays in force:\n${error.message}`)
    }
  })

  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      console.log(`[mls] ${signal}: finishing in-flight tasks, then stopping`)
      void server.stop().then(() => {
        console.log('[mls] stopped')
        resolve()
      })
    }
    process.once('SIGTERM', () => shutdown('SIGTERM'))
    process.once('SIGINT', () => shutdown('SIGINT'))
  })
}

function report(loaded: LoadedConfig): void {
  console.log(`[mls] config: ${loaded.source}`)
  for (const key of loaded.unknownKeys) console.warn(`[mls] warning: unknown config key "${key}" is ignored`)
}

function describePeers(peers: string[]): string {
  return peers.length === 0 ? 'no other instance yet' : peers.join(', ')
}
