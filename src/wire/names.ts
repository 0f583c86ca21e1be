import { z } from 'zod'

const NAME_PATTERN = /^[\w.:@-]+$/

/** Objects keyed by name assign keys, and assigning "__proto__" sets the prototype instead of adding a key. */
export const RESERVED_NAME = '__proto__'
export const reservedNameMessage = `"${RESERVED_NAME}" cannot be a node id or a region name`
const dotSegmentMessage = '"." and ".." cannot be a node id or a region name'

/**
 * The one rule for node ids and region names, wherever they come from: the config (region_hierarchy,
 * access regions), an agent's heartbeat or register, a task, the cluster. They end up in logs, topics and
 * the dashboard: printable and short.
 */
export const nameSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(NAME_PATTERN, 'only letters, digits and . _ : @ - are allowed')
  .refine((name) => name !== RESERVED_NAME, reservedNameMessage)
  .refine((name) => !isDotSegment(name), dotSegmentMessage)

/**
 * "." and "..": a URL path drops them (%2E%2E included) before any route sees it, so an operator
 * action on `/clients/{node_id}` could never name such a node.
 */
function isDotSegment(name: string): boolean {
  return name === '.' || name === '..'
}

/** nameSchema's rule as a plain test, for hot paths that check a name without zod (the same bounds, pattern and reserved names). */
export function isName(value: unknown): value is string {
  return typeof value === 'string' && value.length >= 1 && value.length <= 128 && value !== RESERVED_NAME && !isDotSegment(value) && NAME_PATTERN.test(value)
}

/** A client's share of tasks; 0 drains it. */
export const weightSchema = z.number().int().min(0).max(1000)

/**
 * How many tasks an agent takes at once (its slots): the server never has more of its tasks in flight
 * on it. Absent: no limit. Bounded so a typo cannot make the server count to nonsense.
 */
export const maxInFlightSchema = z.number().int().min(1).max(100_000)

/** A task's class in the queue that forms when every agent of its pool is full: higher classes are served first. */
export const prioritySchema = z.enum(['high', 'normal', 'low'])
export type Priority = z.infer<typeof prioritySchema>

export const protocolSchema = z.enum(['http', 'ws'])
export type Protocol = z.infer<typeof protocolSchema>

/** How an HTTP client's `/work` is called. */
export const schemeSchema = z.enum(['http', 'https'])
export type Scheme = z.infer<typeof schemeSchema>

/**
 * How a WebSocket agent gets a task's payload: `object`, the JSON value itself; `string`, that value's
 * JSON text as a JSON string, for clients written for the original Moonlight, which `JSON.parse` it.
 */
export const payloadFormatSchema = z.enum(['object', 'string'])
export type PayloadFormat = z.infer<typeof payloadFormatSchema>

export const healthStateSchema = z.enum(['healthy', 'failing', 'ejected', 'probation'])
/**
 * healthy: takes tasks; failing: failed failures_to_eject times in a row but kept in service, as ejecting
 * it would take its pool past max_ejected_percent (it may be the last client its tasks can reach);
 * ejected: skipped until its back-off ends; probation: one trial task decides.
 */
export type HealthState = z.infer<typeof healthStateSchema>
