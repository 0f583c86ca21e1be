import { describe, expect, test } from 'bun:test'
import { MemoryTaskStore, type NewTask, StoreFullError, type StoreLimits, type TaskResult } from '../../../../src/tasks/stored/store.ts'
import { FakeClock } from '../../../support/fake-clock.ts'

const LIMITS: StoreLimits = { resultTtlMs: 1000, maxResults: 3, maxBytes: Number.POSITIVE_INFINITY, idempotencyTtlMs: 10_000 }

function newTask(id: string, extra: Partial<NewTask> = {}): NewTask {
  return { task_id: id, mode: 'async', region: 'us-east-1', payload: '1', owner: 'owner-a', disclosure: 'details', submitted_at_ms: 0, ...extra }
}

const DONE: TaskResult = { state: 'done', node_id: 'n1', attempts: [{ node_id: 'n1', status: 200 }], status: 200, headers: {}, body_b64: 'e30=' }

function world(limits: Partial<StoreLimits> = {}) {
  const clock = new FakeClock()
  const store = new MemoryTaskStore(() => ({ ...LIMITS, ...limits }))
  return { clock, store }
}

describe('MemoryTaskStore', () => {
  test('queued → running → done; a finished task stays finished', async () => {
    const { clock, store } = world()
    await store.add(newTask('t1'), undefined, clock.now())
    expect((await store.get('t1', clock.now()))?.state).toBe('queued')
    expect(await store.start('t1', 'i1', false)).toBe(true)
    expect(await store.start('t1', 'i2', false)).toBe(false)
    expect(await store.finish('t1', DONE, clock.now())).toBe(true)
    expect(await store.finish('t1', { ...DONE, state: 'failed' }, clock.now())).toBe(false)
    const task = await store.get('t1', clock.now())
    expect([task?.state, task?.result?.node_id, task?.finished_at_ms]).toEqual(['done', 'n1', clock.now()])
    expect(await store.start('t1', 'i1', true)).toBe(false)
  })

  test('a cancelled task drops a late result, and a takeover restarts only a running task', async () => {
    const { clock, store } = world()
    await store.add(newTask('t1'), undefined, clock.now())
    await store.start('t1', 'i1', false)
    expect(await store.start('t1', 'i2', true)).toBe(true)
    expect((await store.get('t1', clock.now()))?.claimed_by).toBe('i2')
    expect((await store.cancel('t1', clock.now()))?.state).toBe('running')
    expect(await store.finish('t1', DONE, clock.now())).toBe(false)
    expect((await store.get('t1', clock.now()))?.state).toBe('cancelled')
    expect(await store.cancel('nope', clock.now())).toBeUndefined()
  })

  test('the queue: claimed oldest first, a cancelled task leaves it', async () => {
    const { clock, store } = world({ maxResults: 10 })
    for (const id of ['a', 'b', 'c']) await store.add(newTask(id), undefined, clock.now())
    await store.add(newTask('sync', { mode: 'single' }), undefined, clock.now())
    await store.cancel('b', clock.now())
    // Async tasks are queued as they are added; a sync one (run in its request) never is.
    expect(await store.claim('i1', 5)).toEqual(['a', 'c'])
    expect(await store.claim('i1', 5)).toEqual([])
  })

  test('a finished task expires after result_ttl; an unfinished one never does', async () => {
    const { clock, store } = world()
    await store.add(newTask('done'), undefined, clock.now())
    await store.add(newTask('waiting'), undefined, clock.now())
    await store.finish('done', DONE, clock.now())
    clock.advance(999)
    expect(await store.get('done', clock.now())).toBeDefined()
    clock.advance(1)
    expect(await store.get('done', clock.now())).toBeUndefined()
    clock.advance(1_000_000)
    expect((await store.get('waiting', clock.now()))?.state).toBe('queued')
  })

  test('past max_results the oldest finished goes first (counted); full of unfinished tasks, a new one is refused', async () => {
    const { clock, store } = world()
    // Sync (keyed) tasks: stored, never queued.
    const sync = (id: string) => newTask(id, { mode: 'single' })
    for (const id of ['a', 'b', 'c']) await store.add(sync(id), undefined, clock.now())
    await store.finish('b', DONE, clock.now())
    clock.advance(10)
    await store.finish('a', DONE, clock.now())
    await store.add(sync('d'), undefined, clock.now())
    expect(await store.get('b', clock.now())).toBeUndefined()
    expect(await store.get('a', clock.now())).toBeDefined()
    expect((await store.figures(clock.now())).evicted).toBe(1)
    await store.add(sync('e'), undefined, clock.now())
    expect(await store.get('a', clock.now())).toBeUndefined()
    await expect(store.add(sync('f'), undefined, clock.now())).rejects.toBeInstanceOf(StoreFullError)
    expect(await store.figures(clock.now())).toEqual({ stored: 3, queued: 0, running: 0, evicted: 2 })
  })

  test('an idempotency key: the same owner and key find the first task (same body or not); another owner has its own', async () => {
    const { clock, store } = world({ maxResults: 10 })
    const claim = { owner: 'owner-a', key: 'k1', bodyHash: 'h1', ttlMs: 10_000 }
    expect(await store.add(newTask('t1'), claim, clock.now())).toEqual({ added: true })
    const again = await store.add(newTask('t2'), claim, clock.now())
    expect(again).toMatchObject({ added: false, sameBody: true, existing: { task_id: 't1' } })
    expect(await store.add(newTask('t3'), { ...claim, bodyHash: 'h2' }, clock.now())).toMatchObject({ added: false, sameBody: false })
    expect(await store.add(newTask('t4', { owner: 'owner-b' }), { ...claim, owner: 'owner-b' }, clock.now())).toEqual({ added: true })
    expect(await store.get('t2', clock.now())).toBeUndefined()
  })

  test('a keyed task is kept for idempotency_ttl, and its key with it; then the key is free again', async () => {
    const { clock, store } = world({ maxResults: 10 })
    const claim = { owner: 'owner-a', key: 'k1', bodyHash: 'h1', ttlMs: 10_000 }
    await store.add(newTask('t1', { idempotency: { key: 'k1', body_hash: 'h1' } }), claim, clock.now())
    await store.finish('t1', DONE, clock.now())
    clock.advance(5000)
    expect(await store.get('t1', clock.now())).toBeDefined()
    expect(await store.add(newTask('t2'), claim, clock.now())).toMatchObject({ added: false, existing: { task_id: 't1' } })
    clock.advance(5000)
    store.sweep(clock.now())
    expect(await store.get('t1', clock.now())).toBeUndefined()
    expect(await store.add(newTask('t3'), claim, clock.now())).toEqual({ added: true })
  })

  test('an expired task dropped at the bound is not counted as evicted', async () => {
    const { clock, store } = world({ maxResults: 1 })
    await store.add(newTask('old', { mode: 'single' }), undefined, clock.now())
    await store.finish('old', DONE, clock.now())
    clock.advance(LIMITS.resultTtlMs)
    await store.add(newTask('new', { mode: 'single' }), undefined, clock.now())
    expect((await store.figures(clock.now())).evicted).toBe(0)
  })

  test('release frees the key a task holds (and forgets the task when asked); a key taken by another task is left alone', async () => {
    const { clock, store } = world({ maxResults: 10 })
    const claim = { owner: 'owner-a', key: 'k1', bodyHash: 'h1', ttlMs: 10_000 }
    const keyed = newTask('t1', { mode: 'single', idempotency: { key: 'k1', body_hash: 'h1' } })
    await store.add(keyed, claim, clock.now())
    await store.release((await store.get('t1', clock.now()))!, true)
    expect(await store.get('t1', clock.now())).toBeUndefined()
    expect(await store.add(newTask('t2', { mode: 'single', idempotency: { key: 'k1', body_hash: 'h1' } }), claim, clock.now())).toEqual({ added: true })
    // t1 no longer holds k1: releasing it again must not free t2's key.
    await store.release({ ...keyed, state: 'done', finished_at_ms: 0 }, false)
    expect(await store.add(newTask('t3'), claim, clock.now())).toMatchObject({ added: false, existing: { task_id: 't2' } })
  })

  test('an evicted keyed task frees its key: the next request runs anew rather than replaying nothing', async () => {
    const { clock, store } = world({ maxResults: 1 })
    const claim = { owner: 'owner-a', key: 'k1', bodyHash: 'h1', ttlMs: 10_000 }
    await store.add(newTask('t1'), claim, clock.now())
    await store.finish('t1', DONE, clock.now())
    await store.add(newTask('t2'), undefined, clock.now())
    await store.finish('t2', DONE, clock.now())
    expect(await store.add(newTask('t3'), claim, clock.now())).toEqual({ added: true })
  })

  test('the keys held stay within max_results however many keyed tasks are evicted between sweeps (200 000 keys)', async () => {
    const { clock, store } = world({ maxResults: 100 })
    for (let i = 0; i < 200_000; i++) {
      const key = `key-${i}`
      await store.add(
        newTask(`t${i}`, { mode: 'single', idempotency: { key, body_hash: 'h' } }),
        { owner: 'owner-a', key, bodyHash: 'h', ttlMs: 10_000 },
        clock.now(),
      )
      await store.finish(`t${i}`, DONE, clock.now())
    }
    expect((await store.figures(clock.now())).stored).toBe(100)
    // Before: every key stayed until the next sweep (every 5 s in the server), whatever max_results said.
    expect(store.heldKeys).toBeLessThanOrEqual(100)
    // The newest task still answers for its key.
    const last = { owner: 'owner-a', key: 'key-199999', bodyHash: 'h', ttlMs: 10_000 }
    expect(await store.add(newTask('again'), last, clock.now())).toMatchObject({ added: false, existing: { task_id: 't199999' } })
  })

  describe('tasks.max_bytes: payloads and results held at most', () => {
    const result = (bytes: number): TaskResult => ({ ...DONE, body_b64: 'x'.repeat(bytes) })

    test('a result that passes it evicts the oldest finished ones (counted), never the task just finished', async () => {
      const { clock, store } = world({ maxResults: 100, maxBytes: 1000 })
      for (const id of ['a', 'b', 'c']) {
        await store.add(newTask(id), undefined, clock.now())
        await store.finish(id, result(300), clock.now())
      }
      expect((await store.figures(clock.now())).evicted).toBe(0)
      await store.add(newTask('d'), undefined, clock.now())
      // 3 × 301 stored; d's 400-byte result passes 1000: a, then b, make room.
      await store.finish('d', result(400), clock.now())
      expect(await Promise.all(['a', 'b', 'c', 'd'].map(async (id) => (await store.get(id, clock.now()))?.state))).toEqual([
        undefined,
        undefined,
        'done',
        'done',
      ])
      expect((await store.figures(clock.now())).evicted).toBe(2)
      // A result larger than the whole bound is still kept: the one just finished is never dropped for room.
      await store.add(newTask('e'), undefined, clock.now())
      await store.finish('e', result(5000), clock.now())
      expect((await store.get('e', clock.now()))?.state).toBe('done')
      expect(await store.get('c', clock.now())).toBeUndefined()
    })

    test('it counts bytes, as UTF-8 holds them, not characters', async () => {
      const { clock, store } = world({ maxResults: 100, maxBytes: 3000 })
      // 1 500 characters, 4 500 bytes: over the bound with nothing finished to make room from.
      await expect(store.add(newTask('euros', { payload: JSON.stringify('€'.repeat(1499)) }), undefined, clock.now())).rejects.toThrow(
        /this one's 4499 would pass tasks\.max_bytes \(3000\)/,
      )
      await store.add(newTask('ascii', { payload: JSON.stringify('e'.repeat(1499)) }), undefined, clock.now())
      expect((await store.get('ascii', clock.now()))?.state).toBe('queued')
    })

    test('a payload that would pass it makes room from finished tasks, and with none finished is refused', async () => {
      const { clock, store } = world({ maxResults: 100, maxBytes: 1000 })
      await store.add(newTask('old', { payload: 'p'.repeat(500) }), undefined, clock.now())
      await store.finish('old', result(0), clock.now())
      await store.add(newTask('running', { payload: 'p'.repeat(400) }), undefined, clock.now())
      await store.add(newTask('new', { payload: 'p'.repeat(500) }), undefined, clock.now())
      expect(await store.get('old', clock.now())).toBeUndefined()
      // 900 bytes of unfinished payloads: another 200 cannot be made room for.
      await expect(store.add(newTask('refused', { payload: 'p'.repeat(200) }), undefined, clock.now())).rejects.toThrow(StoreFullError)
      await expect(store.add(newTask('refused', { payload: 'p'.repeat(200) }), undefined, clock.now())).rejects.toThrow(/tasks\.max_bytes/)
      // Once one finishes and expires, there is room again.
      await store.finish('running', result(0), clock.now())
      clock.advance(LIMITS.resultTtlMs + 1)
      await store.add(newTask('later', { payload: 'p'.repeat(200) }), undefined, clock.now())
      expect((await store.get('later', clock.now()))?.state).toBe('queued')
    })
  })
})
