import {
  type AddResult,
  type IdempotencyClaim,
  keptForMs,
  type NewTask,
  type StoredTask,
  type StoreFigures,
  StoreFullError,
  type StoreLimits,
  type TaskResult,
  type TaskStore,
} from '../tasks/stored/store.ts'
import type { TaskState } from '../wire/async-task.ts'
import { type ClusterKeys, TASK_GROUP } from './keys.ts'

/** What the store needs of the cluster's Redis connection. */
export interface RedisCommands {
  send(command: string, args: string[]): Promise<unknown>
}

// Each transition is one script: read the state and write the next one atomically, so that two
// instances (a cancel at one, a finish at another) cannot both win.
const START = `
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' or (state == 'running' and ARGV[2] == '1') then
  redis.call('HSET', KEYS[1], 'state', 'running', 'claimed_by', ARGV[1])
  return 1
end
return 0`

const FINISH = `
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'result', ARGV[2], 'finished_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[5])
return 1`

const CANCEL = `
local fields = redis.call('HMGET', KEYS[1], 'state', 'claimed_by', 'task', 'finished_at', 'result')
if not fields[1] then return false end
if fields[1] == 'queued' or fields[1] == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
end
return fields`

/**
 * Adds the task; with an idempotency key, only if the key is free (then the holder's id and body hash
 * come back). An async task is queued first: a script's writes are not undone when a later command in
 * it fails, so the one that may fail (XADD) goes before the others, and no task is stored unqueued.
 */
const ADD = `
if KEYS[2] ~= '' then
  local held = redis.call('GET', KEYS[2])
  if held and redis.call('EXISTS', KEYS[3] .. string.match(held, '^(%S+)')) == 1 then return held end
end
if KEYS[4] ~= '' then redis.call('XADD', KEYS[4], '*', 'task', ARGV[5]) end
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
redis.call('HSET', KEYS[1], 'state', 'queued', 'task', ARGV[1])
if ARGV[4] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return false`

/** Frees the key if this task still holds it; with ARGV[2] = '1', forgets the task too. */
const RELEASE = `
if KEYS[2] ~= '' then
  local held = redis.call('GET', KEYS[2])
  if held and string.match(held, '^(%S+)') == ARGV[1] then redis.call('DEL', KEYS[2]) end
end
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
return 1`

/**
 * Forgets evicted tasks: KEYS holds their n hashes, then their n idempotency keys ('' for none); ARGV
 * their n ids. A key is deleted only while it still names its task (another request may hold it now).
 */
const EVICT = `
local n = #ARGV
for i = 1, n do
  redis.call('DEL', KEYS[i])
  if KEYS[n + i] ~= '' then
    local held = redis.call('GET', KEYS[n + i])
    if held and string.match(held, '^(%S+)') == ARGV[i] then redis.call('DEL', KEYS[n + i]) end
  end
end
return n`

/**
 * Writes back a task running here into a Redis that lost it: running, claimed by this instance, so
 * that its answer is stored when it ends (a record that is there already is left as it is). Its queue
 * entry is not re-made (no other instance must claim and run it again), so it expires after the
 * time a finished one is kept, should this instance die before finishing it. Its idempotency key
 * comes back too, so that a retry is answered from it rather than run again.
 */
const RESTORE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'running', 'claimed_by', ARGV[1], 'task', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[5]) end
return 1`

/**
 * The store in a cluster, in Redis (keys in src/cluster/keys.ts): a hash per task, the queue as a
 * stream with one consumer group, so a task claimed by an instance that dies stays pending and is
 * taken over by another (XAUTOCLAIM), and idempotency keys as plain keys with their TTL.
 */
export class RedisTaskStore implements TaskStore {
  /** Stream entry of each task this instance claimed, for its XACK. */
  private readonly entryOf = new Map<string, string>()
  private groupReady = false

  constructor(
    private readonly redis: RedisCommands,
    private readonly keys: ClusterKeys,
    private readonly limits: () => StoreLimits,
  ) {}

  async add(task: NewTask, claim: IdempotencyClaim | undefined, nowMs: number): Promise<AddResult> {
    const { maxResults } = this.limits()
    await this.evict(maxResults, nowMs)
    const held = (await this.redis.send('EVAL', [
      ADD,
      '4',
      this.keys.task(task.task_id),
      claim ? this.keys.idempotency(claim.owner, claim.key) : '',
      this.keys.task(''),
      task.mode === 'async' ? this.keys.taskQueue : '',
      JSON.stringify(task),
      claim ? `${task.task_id} ${claim.bodyHash}` : '',
      String(claim?.ttlMs ?? 0),
      // A sync task is run by the instance that took it, never from the queue: if that instance dies, its record must not stay for ever.
      task.mode === 'single' ? String(keptForMs(task, this.limits())) : '0',
      task.task_id,
    ])) as string | null
    if (!held) return { added: true }
    const [taskId, bodyHash] = held.split(' ')
    const existing = await this.get(taskId!)
    return { added: false, existing, sameBody: bodyHash === claim?.bodyHash }
  }

  async get(taskId: string): Promise<StoredTask | undefined> {
    const fields = (await this.redis.send('HMGET', [this.keys.task(taskId), 'state', 'claimed_by', 'task', 'finished_at', 'result'])) as Array<string | null>
    return decode(fields)
  }

  async start(taskId: string, instance: string, takeover: boolean): Promise<boolean> {
    return (await this.redis.send('EVAL', [START, '1', this.keys.task(taskId), instance, takeover ? '1' : '0'])) === 1
  }

  async finish(taskId: string, result: TaskResult, nowMs: number): Promise<boolean> {
    const task = await this.get(taskId)
    if (!task) return false
    const keptMs = keptForMs(task, this.limits())
    const args = [FINISH, '2', this.keys.task(taskId), this.keys.finishedTasks, result.state, JSON.stringify(result), String(nowMs), String(keptMs), taskId]
    return (await this.redis.send('EVAL', args)) === 1
  }

  async cancel(taskId: string, nowMs: number): Promise<StoredTask | undefined> {
    const task = await this.get(taskId)
    if (!task) return undefined
    const keptMs = keptForMs(task, this.limits())
    const before = (await this.redis.send('EVAL', [
      CANCEL,
      '2',
      this.keys.task(taskId),
      this.keys.finishedTasks,
      String(nowMs),
      String(keptMs),
      taskId,
    ])) as Array<string | null> | null
    return before ? decode(before) : undefined
  }

  async release(task: StoredTask, dropTask: boolean): Promise<void> {
    const key = task.idempotency ? this.keys.idempotency(task.owner, task.idempotency.key) : ''
    await this.redis.send('EVAL', [RELEASE, '2', this.keys.task(task.task_id), key, task.task_id, dropTask ? '1' : '0'])
  }

  /** After Redis came back empty: the tasks running here, written back (see RESTORE); the ids written. */
  async restore(tasks: StoredTask[], instance: string): Promise<string[]> {
    // The consumer group went with the rest: made again at the next claim.
    this.groupReady = false
    const limits = this.limits()
    const restored: string[] = []
    for (const task of tasks) {
      const { state: _state, claimed_by: _claimedBy, finished_at_ms: _finishedAt, result: _result, ...asAdded } = task
      const key = task.idempotency ? this.keys.idempotency(task.owner, task.idempotency.key) : ''
      const written = await this.redis.send('EVAL', [
        RESTORE,
        '2',
        this.keys.task(task.task_id),
        key,
        instance,
        JSON.stringify(asAdded),
        String(keptForMs(task, limits)),
        task.idempotency ? `${task.task_id} ${task.idempotency.body_hash}` : '',
        String(limits.idempotencyTtlMs),
      ])
      if (written === 1) restored.push(task.task_id)
    }
    return restored
  }

  async claim(instance: string, count: number): Promise<string[]> {
    await this.ensureGroup()
    const reply = (await this.grouped('XREADGROUP', ['GROUP', TASK_GROUP, instance, 'COUNT', String(count), 'STREAMS', this.keys.taskQueue, '>'])) as
      | Record<string, Array<[string, string[]]>>
      | Array<[string, Array<[string, string[]]>]>
      | null
    // Bun answers a map of stream → entries (RESP3); RESP2 would be a list of [stream, entries].
    const entries = !reply ? [] : Array.isArray(reply) ? (reply[0]?.[1] ?? []) : (Object.values(reply)[0] ?? [])
    return this.remember(entries)
  }

  async reclaim(instance: string, idleMs: number, count: number): Promise<string[]> {
    await this.ensureGroup()
    const reply = (await this.grouped('XAUTOCLAIM', [this.keys.taskQueue, TASK_GROUP, instance, String(idleMs), '0-0', 'COUNT', String(count)])) as [
      string,
      Array<[string, string[]] | null>,
      string[]?,
    ]
    return this.remember(reply[1].filter((entry): entry is [string, string[]] => entry !== null))
  }

  async ack(taskId: string): Promise<void> {
    const entry = this.entryOf.get(taskId)
    if (!entry) return
    this.entryOf.delete(taskId)
    await this.redis.send('XACK', [this.keys.taskQueue, TASK_GROUP, entry])
    await this.redis.send('XDEL', [this.keys.taskQueue, entry])
  }

  async figures(nowMs: number): Promise<StoreFigures> {
    await this.ensureGroup()
    await this.dropExpired(nowMs)
    const [length, pending, stored, evicted] = await Promise.all([
      this.redis.send('XLEN', [this.keys.taskQueue]) as Promise<number>,
      this.redis.send('XPENDING', [this.keys.taskQueue, TASK_GROUP]) as Promise<[number, ...unknown[]]>,
      this.redis.send('ZCARD', [this.keys.finishedTasks]) as Promise<number>,
      this.redis.send('GET', [this.keys.evictedTasks]) as Promise<string | null>,
    ])
    const running = Number(pending[0] ?? 0)
    return { stored: Number(stored) + Number(length), queued: Math.max(0, Number(length) - running), running, evicted: Number(evicted ?? 0) }
  }

  /** The oldest finished tasks past max_results go; expired ones leave the eviction list uncounted. */
  private async evict(maxResults: number, nowMs: number): Promise<void> {
    await this.dropExpired(nowMs)
    const [finished, queued] = (await Promise.all([this.redis.send('ZCARD', [this.keys.finishedTasks]), this.redis.send('XLEN', [this.keys.taskQueue])])) as [
      number,
      number,
    ]
    const over = Number(finished) + Number(queued) + 1 - maxResults
    if (over <= 0) return
    if (Number(finished) === 0) throw new StoreFullError(`${maxResults} tasks are stored and none has finished (tasks.max_results)`)
    const popped = (await this.redis.send('ZPOPMIN', [this.keys.finishedTasks, String(over)])) as Array<string | [string, number]>
    // Bun answers [member, score] pairs (RESP3); RESP2 would be member, score, member, score… Reading
    // RESP2's shape from pairs deleted no task at all (the key named a pair) and counted half.
    const ids = popped.flatMap((entry, index) => (Array.isArray(entry) ? [String(entry[0])] : index % 2 === 0 ? [entry] : []))
    if (ids.length === 0) return
    // Each task's idempotency key goes with it (if it still holds it), not after idempotency_ttl: keyed
    // tasks evicted by the thousand would otherwise hold keys in step with the request rate.
    const added = (await Promise.all(ids.map((id) => this.redis.send('HGET', [this.keys.task(id), 'task'])))) as Array<string | null>
    const keyNames = added.map((task) => this.idempotencyKeyOf(task))
    await this.redis.send('EVAL', [EVICT, String(ids.length * 2), ...ids.map((id) => this.keys.task(id)), ...keyNames, ...ids])
    await this.redis.send('INCRBY', [this.keys.evictedTasks, String(ids.length)])
  }

  /** The Redis key of the idempotency key a stored task's `task` field names, or '' (none, or not readable). */
  private idempotencyKeyOf(task: string | null): string {
    if (task === null) return ''
    try {
      const { owner, idempotency } = JSON.parse(task) as Partial<NewTask>
      return typeof owner === 'string' && typeof idempotency?.key === 'string' ? this.keys.idempotency(owner, idempotency.key) : ''
    } catch {
      return ''
    }
  }

  /** The finished list is scored by when each task expires: what has expired leaves it, uncounted (Redis has dropped the task itself). */
  private async dropExpired(nowMs: number): Promise<void> {
    await this.redis.send('ZREMRANGEBYSCORE', [this.keys.finishedTasks, '-inf', String(nowMs)])
  }

  private remember(entries: Array<[string, string[]]>): string[] {
    const ids: string[] = []
    for (const [entryId, fields] of entries) {
      const taskId = fields[fields.indexOf('task') + 1]
      if (!taskId) continue
      this.entryOf.set(taskId, entryId)
      ids.push(taskId)
    }
    return ids
  }

  /** The group, created once per connection's life; '0' so that tasks queued before it are read too. */
  private async ensureGroup(): Promise<void> {
    if (this.groupReady) return
    try {
      await this.redis.send('XGROUP', ['CREATE', this.keys.taskQueue, TASK_GROUP, '0', 'MKSTREAM'])
    } catch (error) {
      if (!String((error as Error).message).includes('BUSYGROUP')) throw error
    }
    this.groupReady = true
  }

  /** A group command; a Redis that restarted empty has lost the group, which is then made again at the next use. */
  private async grouped(command: string, args: string[]): Promise<unknown> {
    try {
      return await this.redis.send(command, args)
    } catch (error) {
      if (String((error as Error).message).includes('NOGROUP')) this.groupReady = false
      throw error
    }
  }
}

function decode(fields: Array<string | null>): StoredTask | undefined {
  const [state, claimedBy, task, finishedAt, result] = fields
  if (!state || !task) return undefined
  return {
    ...(JSON.parse(task) as NewTask),
    state: state as TaskState,
    claimed_by: claimedBy ?? undefined,
    finished_at_ms: finishedAt ? Number(finishedAt) : null,
    result: result ? (JSON.parse(result) as TaskResult) : undefined,
  }
}
