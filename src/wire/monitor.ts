import { z } from 'zod'
import { clientViewSchema, regionNodeSchema, taskViewSchema } from './views.ts'

/** One second of the tasks-per-second chart. */
export const seriesPointSchema = z.object({ second: z.number().int(), tasks: z.number().int(), errors: z.number().int(), avg_latency_ms: z.number() })
export type SeriesPoint = z.infer<typeof seriesPointSchema>

/** Task latency quantiles since the start, in ms, at the histogram's bucket resolution; null: above the last bucket (60 s). */
export const taskLatencySchema = z.object({ p50_ms: z.number().nullable(), p95_ms: z.number().nullable(), p99_ms: z.number().nullable() })
export type TaskLatency = z.infer<typeof taskLatencySchema>

/** The slot queue and the retry budget, for the dashboard's queue tile. */
export const queueLineSchema = z.object({
  /** Tasks waiting for a slot now. */
  depth: z.number().int(),
  /** The median wait for a slot since the start, in ms, at bucket resolution; null: none waited yet, or above the last bucket (60 s). */
  wait_p50_ms: z.number().nullable(),
  /** Tasks turned away from the queue since the start (queue_timeout, queue_full, shutting_down). */
  shed: z.number().int(),
  /** Retries the retry budget refused since the start. */
  retries_refused: z.number().int(),
})
export type QueueLine = z.infer<typeof queueLineSchema>

/** The totals line every snapshot and update carries. */
export const statusLineSchema = z.object({
  clients: z.number().int(),
  in_flight: z.number().int(),
  tasks_total: z.number().int(),
  tasks_failed: z.number().int(),
  /** From moonlight_task_duration_seconds's buckets; absent until a task has finished. */
  latency: taskLatencySchema.optional(),
  queue: queueLineSchema.optional(),
})
export type StatusLine = z.infer<typeof statusLineSchema>

/** What a dashboard gets when it joins the feed (and whenever it sends `monitor` again). */
export const monitorSnapshotSchema = z.object({
  clients: z.array(clientViewSchema),
  regions: regionNodeSchema,
  series: z.array(seriesPointSchema),
  recent: z.array(taskViewSchema),
  status: statusLineSchema,
})
export type MonitorSnapshot = z.infer<typeof monitorSnapshotSchema>

/** A batch of what changed, every 500 ms; the lists are there only when something changed. */
export const monitorUpdateSchema = z.object({
  clients: z.array(clientViewSchema).optional(),
  removed: z.array(z.object({ node_id: z.string(), reason: z.string() })).optional(),
  tasks: z.array(taskViewSchema).optional(),
  regions: regionNodeSchema.optional(),
  point: seriesPointSchema.optional(),
  status: statusLineSchema,
})
export type MonitorUpdate = z.infer<typeof monitorUpdateSchema>

/** The feed's frames on the `monitor` topic. */
export const monitorFrameSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('monitor_ok'), payload: monitorSnapshotSchema }),
  z.object({ type: z.literal('update'), payload: monitorUpdateSchema }),
])
export type MonitorFrame = z.infer<typeof monitorFrameSchema>
