import type { Config } from './config.ts'

/** What a reload applies now, and which changed keys wait for the next start. */
export interface ReloadPlan {
  /** The config in force after the reload: the new one, with what the running server was built on kept. */
  config: Config
  /** Changed keys that apply only at the next start. */
  atNextStart: string[]
}

/**
 * A reload as a pure function of the config the server started with and the new one. The listening socket, the
 * WebSocket path, the pages' routes, whether it speaks TLS and Bun's WebSocket message limit were fixed when the server
 * started: those keep their running values (so /status and the timers tell the truth), everything
 * else applies at once.
 */
export function planReload(started: Config, next: Config): ReloadPlan {
  const atNextStart: string[] = []
  const keep = <T>(key: string, running: T, wanted: T): T => {
    if (JSON.stringify(running) !== JSON.stringify(wanted)) atNextStart.push(key)
    return running
  }
  const config: Config = {
    ...next,
    port: keep('port', started.port, next.port),
    host: keep('host', started.host, next.host),
    html: keep('html', started.html, next.html),
    cluster: keep('cluster', started.cluster, next.cluster),
    ws: { ...next.ws, enabled: keep('ws.enabled', started.ws.enabled, next.ws.enabled), path: keep('ws.path', started.ws.path, next.ws.path) },
    // HTTP or HTTPS is fixed at start; with TLS on, new files (or new paths) renew the certificate at once.
    tls: started.tls && next.tls ? next.tls : keep('tls', started.tls, next.tls),
  }
  // HTTP answers follow max_answer_bytes at once; Bun's limit on WebSocket messages stays as it started.
  if (started.max_answer_bytes !== next.max_answer_bytes) atNextStart.push('max_answer_bytes (for WebSocket messages)')
  return { config, atNextStart }
}
