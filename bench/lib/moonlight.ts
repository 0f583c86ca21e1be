/** Starting Moonlight itself, as its own process, the way an operator runs it. */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SEED_HIERARCHY } from '../../src/config/config.ts'
import { type Child, spawnChild } from './proc.ts'

export const BENCH_TOKEN = 'bench-token-0123456789'
export const ROOT = join(import.meta.dir, '..', '..')

export interface MoonlightProcess extends Child {
  url: string
  wsUrl: string
}

/**
 * Writes a config (the seed's hierarchy, one token, room for many WebSocket agents, pages off)
 * into `dir` and starts `bun src/cli.ts serve` on a free port of 127.0.0.1.
 */
export async function startMoonlight(
  dir: string,
  options: {
    name?: string
    env?: Record<string, string | undefined>
    bunArgs?: string[] /** Another checkout's root, to compare two versions. */
    root?: string
    /** More top-level config keys (e.g. `cluster`), merged over the defaults below. */
    config?: Record<string, unknown>
  } = {},
): Promise<MoonlightProcess> {
  const name = options.name ?? 'moonlight'
  const configPath = join(dir, `${name}.json`)
  const config = {
    tokens: [BENCH_TOKEN],
    require_task_token: true,
    task_timeout: 30,
    client_ttl: 3600,
    html: { enabled: false },
    ws: { max_connections: 100_000 },
    region_hierarchy: SEED_HIERARCHY,
    ...options.config,
  }
  writeFileSync(configPath, JSON.stringify(config, null, 2))
  const command = [
    process.execPath,
    ...(options.bunArgs ?? []),
    join(options.root ?? ROOT, 'src/cli.ts'),
    'serve',
    '--config',
    configPath,
    '--port',
    '0',
    '--host',
    '127.0.0.1',
  ]
  const child = spawnChild(name, command, { MLS_CONFIG: '', ...options.env })
  const [, url] = await child.waitFor(/listening on (http:\/\/\S+)/)
  return { ...child, url: url!, wsUrl: `${url!.replace(/^http/, 'ws')}/ws` }
}

/** Polls `url` until anything answers (a proxy is up once it accepts and replies). */
export async function waitForHttp(url: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      await (await fetch(url)).arrayBuffer()
      return
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs} ms: ${(error as Error).message}`)
      await Bun.sleep(50)
    }
  }
}
