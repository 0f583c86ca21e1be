/** Review of issue 14: the memory store's cost per submission. Fails today. */
import { expect, test } from 'bun:test'
import { MemoryTaskStore, type NewTask, type TaskResult } from '../../src/task-store.ts'
import { FakeClock } from '../fake-clock.ts'

const DONE: TaskResult = { state: 'done', node_id: 'n1', attempts: [], status: 200, headers: {}, body_b64: 'e30=' }
const task = (id: string): NewTask => ({ task_id: id, mode: 'async', region: 'r', payload: '1', owner: 'o', disclosure: 'details', submitted_at_ms: 0 })

test('with the 10 000 finished keyed tasks stored (a tenth of the default max_results), a submission costs O(1), not a sweep of every stored task', async () => {
  const clock = new FakeClock()
  const store = new MemoryTaskStore(() => ({ resultTtlMs: 600_000, maxResults: 100_000, idempotencyTtlMs: 86_400_000 }))
  for (let i = 0; i < 10_000; i++) {
    await store.add(task(`warm-${i}`), { owner: 'o', key: `k-${i}`, bodyHash: 'h', ttlMs: 86_400_000 }, clock.now())
    await store.finish(`warm-${i}`, DONE, clock.now())
  }
  const startedAt = performance.now()
  for (let i = 0; i < 2000; i++) await store.add(task(`t-${i}`), undefined, clock.now())
  const ms = performance.now() - startedAt
  console.log(`[review] 2000 submissions with 10 000 finished tasks stored: ${ms.toFixed(0)} ms`)
  // Today each add() sweeps all 10 000 finished tasks and keys: seconds for 2000 submissions, i.e. a few hundred per second.
  expect(ms).toBeLessThan(100)
}, 60_000)
