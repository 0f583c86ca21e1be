/** Reading the heap probe (heap-probe.ts) preloaded into a Bun process under test, before and after a run. */
import { join } from 'node:path'
import type { Child } from './proc.ts'

/** The arguments to give bun (before the script) to load the probe. */
export const HEAP_PROBE_ARGS = ['--preload', join(import.meta.dir, 'heap-probe.ts')]

interface Counters {
  collections: number
  native_bytes: number
  native_allocations: number
}
export interface HeapReading {
  before_collection: Counters
  after_collection: Counters & { heap_bytes: number; heap_objects: number }
}

/** What one run cost a probed process, per task answered. */
export interface HeapPerTask {
  /** Collections (young or full) per 1000 tasks, as the probe's sentinel saw them (a lower bound). */
  collections_per_1000: number
  /** Bytes allocated through mimalloc (outside the JS heap) per task. */
  native_bytes: number
  native_allocations: number
  /** Growth of the JS heap between full collections before and after the run, per task: what stayed reachable. */
  retained_bytes: number
  retained_objects: number
}

/** The probe's side port, from the line it prints at start. */
export async function heapProbePort(child: Child): Promise<number> {
  return Number((await child.waitFor(/heap probe on port (\d+)/))[1])
}

export async function readHeap(port: number): Promise<HeapReading> {
  const response = await fetch(`http://127.0.0.1:${port}/heap`)
  return (await response.json()) as HeapReading
}

/** The run between `start` (its after-collection state) and `end` (its before-collection counters). */
export function heapPerTask(start: HeapReading, end: HeapReading, tasks: number): HeapPerTask {
  const from = start.after_collection
  const to = end.before_collection
  return {
    collections_per_1000: ((to.collections - from.collections) * 1000) / tasks,
    native_bytes: (to.native_bytes - from.native_bytes) / tasks,
    native_allocations: (to.native_allocations - from.native_allocations) / tasks,
    retained_bytes: (end.after_collection.heap_bytes - from.heap_bytes) / tasks,
    retained_objects: (end.after_collection.heap_objects - from.heap_objects) / tasks,
  }
}
