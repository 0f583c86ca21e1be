import { describe, expect, test } from 'bun:test'
import { DEFAULT_ROUTING } from '../../../../src/tasks/routing.ts'
import type { Submission } from '../../../../src/tasks/stored/runner.ts'
import { MemoryTaskStore } from '../../../../src/tasks/stored/store.ts'
import { FakeTransport, STORE_LIMITS, settle, taskCore } from '../../../support/fake-transport.ts'

function submission(mode: 'async' | 'single', idempotency?: Submission['idempotency']): Submission {
  return {
    task: { task_id: 't1', mode, region: 'usa', payload: '1', routing: DEFAULT_ROUTING, owner: '', disclosure: 'details', submitted_at_ms: 0 },
    idempotency,
  }
}

describe('a stored task that a server bug ends', () => {
  test('an async task is finished failed with the 500 a caller would get, not left running for ever', async () => {
    const core = taskCore({ http: new FakeTransport(() => Promise.reject(new TypeError('oops'))) })
    core.join('a', 'usa')
    const reported: unknown[] = []
    const store = new MemoryTaskStore(() => STORE_LIMITS)
    const tasks = core.storedTasks(store, (error) => void reported.push(error))
    await tasks.submit(submission('async'))
    await tasks.pump(false)
    for (let turn = 0; turn < 20 && (await tasks.get('t1'))?.state === 'running'; turn++) await settle()
    const task = await tasks.get('t1')
    expect(task).toMatchObject({ state: 'failed', result: { status: 500, attempts: [] } })
    expect(JSON.parse(Buffer.from(task!.result!.body_b64, 'base64').toString())).toEqual({ error: 'internal server error', code: 'internal' })
    // The bug itself is logged with its stack, once.
    expect(reported).toHaveLength(1)
    expect(String(reported[0])).toContain('oops')
    // Acked: nothing is left to claim or take over.
    expect(await store.claim('test-instance', 10)).toEqual([])
  })

  test('a keyed task answers 500 and keeps it: the same key again gets that answer, not a second run', async () => {
    const http = new FakeTransport(() => Promise.reject(new TypeError('oops')))
    const core = taskCore({ http })
    core.join('a', 'usa')
    const tasks = core.storedTasks(undefined, () => undefined)
    const { task } = await tasks.submit(submission('single', { key: 'k1', bodyHash: 'h1' }))
    const response = (await tasks.runHere(task))!
    expect(response.status).toBe(500)
    expect(await response.json()).toEqual({ error: 'internal server error', code: 'internal' })
    expect(await tasks.get('t1')).toMatchObject({ state: 'failed', result: { status: 500 } })
    const again = await tasks.submit(submission('single', { key: 'k1', bodyHash: 'h1' }))
    expect(again).toMatchObject({ replayed: true, task: { state: 'failed' } })
    expect(http.sentTo).toEqual(['a'])
  })
})
