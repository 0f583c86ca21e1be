import { z } from 'zod'

/** Node ids and regions end up in logs, topics and the dashboard: keep them printable and short. */
export const nameSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\w.:@-]+$/, 'only letters, digits and . _ : @ - are allowed')

/** A client's share of tasks; 0 drains it. */
export const weightSchema = z.number().int().min(0).max(1000)

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
