/**
 * Preloaded into a Bun process under test by bench/alloc.ts: a side port on 127.0.0.1 whose
 * GET /counts returns `heapStats().objectTypeCounts` (cells per JavaScriptCore class: Object,
 * string, Promise, Function, Headers, …), the cell count, mimalloc's totals and the process's CPU.
 *
 * Run with `BUN_JSC_useGC=false` the heap never collects, so the difference of two readings is
 * what the process ALLOCATED in between, by type (checked: 1e5 `{i}` → +100 000 Object, 1e5
 * closures → +100 000 Function and JSLexicalEnvironment). With the collector on and `?gc=1`, the
 * reading follows a full collection: the difference is what stayed reachable (retention).
 * Objects the JIT sinks (escape analysis) are never allocated and do not show, rightly.
 */
import { heapStats } from 'bun:jsc'

let collections = 0
const sentinels = new FinalizationRegistry<undefined>(() => {
  collections++
  sentinels.register({}, undefined)
})
sentinels.register({}, undefined)

const probe = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  reusePort: false,
  async fetch(request) {
    if (new URL(request.url).searchParams.get('gc') === '1') {
      Bun.gc(true)
      await Bun.sleep(5)
      Bun.gc(true)
    }
    const stats = heapStats() as ReturnType<typeof heapStats> & {
      mimalloc?: { malloc_normal: { total: number }; malloc_normal_count: number }
    }
    const usage = process.cpuUsage()
    return Response.json({
      collections,
      counts: stats.objectTypeCounts,
      objects: stats.objectCount,
      heap_bytes: stats.heapSize,
      /** What the collector has taken from the system for its cells, live or not: what the heap adds to RSS. */
      heap_capacity: stats.heapCapacity,
      native_bytes: stats.mimalloc?.malloc_normal.total ?? Number.NaN,
      native_allocations: stats.mimalloc?.malloc_normal_count ?? Number.NaN,
      cpu_us: usage.user + usage.system,
    })
  },
})
console.error(`alloc probe on port ${probe.port}`)
