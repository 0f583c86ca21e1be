/**
 * What the cluster checks of its Redis each time it (re)connects: settings under which Redis loses
 * async tasks (no persistence, eviction), and whether Redis came back empty since this instance last
 * saw it. Async tasks live only in Redis: both losses are silent unless said here.
 */

/** The Redis settings that decide whether accepted async tasks survive (`CONFIG GET`). */
export interface RedisSettings {
  appendonly: string
  /** RDB snapshot rules, "" for none. */
  save: string
  maxmemoryPolicy: string
}

/** The warnings the settings call for, one line each (empty when they keep tasks safe). */
export function riskySettings(settings: RedisSettings, redisUrl: string): string[] {
  const risks: string[] = []
  if (settings.appendonly !== 'yes') {
    risks.push(
      settings.save.trim() === ''
        ? `Redis at ${redisUrl} keeps nothing on disk (appendonly ${settings.appendonly}, save ""): a Redis restart loses every queued and stored async task, silently (404 unknown_task); for async tasks run it with appendonly yes (docs/cluster.md)`
        : `Redis at ${redisUrl} persists only by snapshots (appendonly ${settings.appendonly}, save "${settings.save}"): a Redis restart loses the async tasks accepted since the last snapshot; for async tasks run it with appendonly yes (docs/cluster.md)`,
    )
  }
  if (settings.maxmemoryPolicy !== 'noeviction') {
    risks.push(
      `Redis at ${redisUrl} may evict keys (maxmemory-policy ${settings.maxmemoryPolicy}): once it reaches maxmemory it drops queued tasks, results, idempotency keys and instances' presence; set maxmemory-policy noeviction (a full Redis then refuses new tasks with 503 store_unavailable instead)`,
    )
  }
  return risks
}

/** One setting's value from a `CONFIG GET` answer: a map (RESP3, as Bun reads it) or a [name, value] list (RESP2). */
export function configValue(reply: unknown, name: string): string {
  if (Array.isArray(reply)) {
    const at = reply.indexOf(name)
    if (at >= 0 && typeof reply[at + 1] === 'string') return reply[at + 1]
  } else if (reply !== null && typeof reply === 'object') {
    const value = (reply as Record<string, unknown>)[name]
    if (typeof value === 'string') return value
  }
  throw new Error(`CONFIG GET ${name} gave no value`)
}

/** The sentence logged when Redis came back empty: what is lost, and what this instance re-stored. */
export function cameBackEmpty(redisUrl: string, markerKey: string, restored: string[]): string {
  const kept =
    restored.length === 0
      ? 'no task runs here, so there is nothing to re-store'
      : `re-stored the ${restored.length} task${restored.length === 1 ? '' : 's'} running here (${restored.join(', ')}), so ${restored.length === 1 ? 'its answer is' : 'their answers are'} kept`
  return `Redis at ${redisUrl} came back empty (its key ${markerKey} is gone: it restarted without persistence, or was flushed, or evicted it): the queued tasks and stored results are lost (404 unknown_task), and their idempotency keys with them; ${kept}`
}
