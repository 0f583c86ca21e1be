/**
 * Preloaded into a Bun process under test (`bun --preload bench/lib/heap-probe.ts …`, see
 * heap-readings.ts): a side port on 127.0.0.1 whose GET /heap tells the runner what the process has
 * allocated and collected, so a run's figures are the difference of two readings. Nothing runs on
 * the process's task path: one tiny callback per garbage collection, and the side port when asked.
 *
 * JavaScriptCore keeps no count of collections or of bytes allocated in its own heap that a script
 * can read, so the probe reports what can be read exactly:
 * - `collections`: a FinalizationRegistry sentinel, re-armed each time it is collected, counts the
 *   collections (young or full) whose finalizers ran; two collections before the callback runs count
 *   as one, so it is a lower bound.
 * - `native_bytes` / `native_allocations`: mimalloc's running totals (heapStats().mimalloc), the
 *   allocator Bun uses outside the JS heap: string contents, buffers, Bun's native request, response
 *   and socket objects, the compilers' data (other threads' as mimalloc merges their statistics).
 *   JS objects themselves live in JavaScriptCore's heap and are not in them.
 * - `heap_bytes` / `heap_objects`: the JS heap's size and cell count after a forced full collection:
 *   what stays reachable, not what was allocated.
 */
import { heapStats } from 'bun:jsc'

let collections = 0
const sentinels = new FinalizationRegistry<undefined>(() => {
  collections++
  armSentinel()
})
function armSentinel(): void {
  sentinels.register({}, undefined)
}
armSentinel()

/** mimalloc's statistics, which bun-types does not describe (Bun 1.4.5 returns them in heapStats()). */
interface MimallocStats {
  malloc_normal: { total: number }
  malloc_huge: { total: number }
  malloc_normal_count: number
  malloc_huge_count: number
}

function counters() {
  const stats = heapStats() as ReturnType<typeof heapStats> & { mimalloc?: MimallocStats }
  const mimalloc = stats.mimalloc
  return {
    collections,
    native_bytes: mimalloc ? mimalloc.malloc_normal.total + mimalloc.malloc_huge.total : Number.NaN,
    native_allocations: mimalloc ? mimalloc.malloc_normal_count + mimalloc.malloc_huge_count : Number.NaN,
  }
}

const probe = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  reusePort: false,
  async fetch() {
    // Counters first: the forced collection below must not count as the run's.
    const beforeCollection = counters()
    Bun.gc(true)
    // Let the sentinel's finalizer run, so the next reading's baseline already holds this collection.
    await Bun.sleep(5)
    const stats = heapStats()
    return Response.json({
      before_collection: beforeCollection,
      after_collection: { ...counters(), heap_bytes: stats.heapSize, heap_objects: stats.objectCount },
    })
  },
})
// Not "listening on …": the runner looks for that line from the process under test itself.
console.error(`heap probe on port ${probe.port}`)
