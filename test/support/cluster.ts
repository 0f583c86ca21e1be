/**
 * Cluster tests' common parts: `moonlight serve` processes sharing one fleet through a real
 * redis-server (test/support/redis.ts). instance_ttl is 1 s, so a dead instance is noticed within a second or two.
 */
import { afterAll } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SEED_CONFIG, type SpawnedServer, spawnServer, startWsAgent, TOKEN, type WsAgent } from './helpers.ts'
import { startRedis, type TestRedis } from './redis.ts'

export interface Instance {
  id: string
  url: string
  wsUrl: string
  child: SpawnedServer
}

/** The helpers, bound to a test file's `defer` (from testScope). */
export function clusterScope(defer: (cleanup: () => unknown) => void) {
  const dir = mkdtempSync(join(tmpdir(), 'mls-cluster-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  /** A config file: the seed's, pages off, plus `extra` (a `cluster` section among them). */
  function writeConfig(name: string, extra: Record<string, unknown>): string {
    const path = join(dir, `${name}-${crypto.randomUUID()}.json`)
    writeFileSync(path, JSON.stringify({ ...SEED_CONFIG, html: { ...SEED_CONFIG.html, enabled: false }, ...extra }, null, 2))
    return path
  }

  async function redisServer(options: Parameters<typeof startRedis>[0] = {}): Promise<TestRedis> {
    const redis = await startRedis(options)
    defer(redis.stop)
    return redis
  }

  /** `moonlight serve` as its own process, killed (-9) after the test if it is still running. */
  async function spawn(args: string[], env: Record<string, string> = {}): Promise<SpawnedServer> {
    const child = await spawnServer([...args, '--port', '0', '--host', '127.0.0.1'], { env })
    defer(async () => {
      child.process.kill('SIGKILL')
      await child.exited
    })
    return child
  }

  /** An instance of the cluster on `redisUrl` named `id`, with `extra` config (cluster keys go into its cluster section). */
  async function instance(redisUrl: string, id: string, extra: { cluster?: Record<string, unknown>; [key: string]: unknown } = {}): Promise<Instance> {
    const { cluster, ...rest } = extra
    const path = writeConfig(id, { ...rest, cluster: { redis_url: redisUrl, instance_id: id, instance_ttl: 1, ...cluster } })
    const child = await spawn(['--config', path])
    if (!child.url) throw new Error(`instance ${id} did not start:\n${child.output()}`)
    return { id, url: child.url, wsUrl: `${child.url.replace(/^http/, 'ws')}/ws`, child }
  }

  async function wsAgent(at: Instance, options: Parameters<typeof startWsAgent>[1]): Promise<WsAgent> {
    const agent = await startWsAgent(at.wsUrl, options)
    defer(agent.close)
    return agent
  }

  return { dir, writeConfig, redisServer, spawn, instance, wsAgent }
}

export async function getJson(url: string): Promise<any> {
  const response = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } })
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status} ${await response.text()}`)
  return response.json()
}
