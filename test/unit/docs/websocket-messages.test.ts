/**
 * docs/websocket-protocol.md and the monitoring channel of docs/dashboard.md match the wire schemas of
 * src/wire: every message the pages show is one the schemas know, in the direction the page says, with
 * the fields the schemas have (and every field of the schemas is named on the page); every error code
 * the page lists is a code, and every code the WebSocket gateway can send in an error frame is listed.
 */
import { describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { z } from 'zod'
import { errorCodeSchema } from '../../../src/wire/errors.ts'
import { monitorFrameSchema, monitorSnapshotSchema, monitorUpdateSchema, seriesPointSchema, statusLineSchema } from '../../../src/wire/monitor.ts'
import { taskViewSchema } from '../../../src/wire/views.ts'
import { wsAgentInboundSchema, wsInboundSchema } from '../../../src/wire/ws.ts'
import { ROOT } from '../../support/helpers.ts'

const protocol = readFileSync(join(ROOT, 'docs/websocket-protocol.md'), 'utf8')
const dashboard = readFileSync(join(ROOT, 'docs/dashboard.md'), 'utf8')
const gateway = readFileSync(join(ROOT, 'src/ws/gateway.ts'), 'utf8')

type AnyObject = z.ZodObject<z.ZodRawShape>

/** The object schema of each `type` a discriminated union of messages holds. */
function byType(union: { options: readonly unknown[] }): Map<string, AnyObject> {
  const types = new Map<string, AnyObject>()
  for (const option of union.options as AnyObject[]) {
    const literal = option.shape.type as unknown as { value: string }
    types.set(literal.value, option)
  }
  return types
}

/** The keys of an object schema, under optional/default wrappers. */
function keysOf(schema: unknown): string[] | undefined {
  if (schema === undefined) return undefined
  let inner = schema as { shape?: Record<string, unknown>; unwrap?: () => unknown; def?: { innerType?: unknown } }
  for (let i = 0; i < 5 && !inner.shape; i++) {
    const next = inner.unwrap?.() ?? inner.def?.innerType
    if (!next) break
    inner = next as typeof inner
  }
  return inner.shape ? Object.keys(inner.shape) : undefined
}

/** A message the page shows in a code span, with `{…}` (any value) made `{}` so it parses. */
function parseExample(text: string): Record<string, unknown> {
  return JSON.parse(text.replaceAll('{…}', '{}'))
}

/** The rows of the page's message table: direction, the first example, and the whole row's text. */
function tableRows(): Array<{ direction: 'to-server' | 'to-client'; message: Record<string, unknown>; row: string }> {
  return protocol
    .split('\n')
    .filter((line) => /^\| (→ server|← client) \|/.test(line))
    .map((row) => {
      const example = /`(\{"type":.*?\})`/.exec(row)?.[1]
      if (!example) throw new Error(`a message row without an example: ${row}`)
      return { direction: row.startsWith('| →') ? 'to-server' : 'to-client', message: parseExample(example), row }
    })
}

const toServer = byType(wsInboundSchema)
const toAgent = byType(wsAgentInboundSchema)

describe('docs/websocket-protocol.md', () => {
  test("each message of the table is one the schemas know, in the table's direction, with the schema's fields", () => {
    const rows = tableRows()
    expect(rows.length).toBeGreaterThanOrEqual(7)
    for (const { direction, message, row } of rows) {
      const type = String(message.type)
      const schema = (direction === 'to-server' ? toServer : toAgent).get(type)
      expect({ type, direction, known: schema !== undefined }).toEqual({ type, direction, known: true })
      // Every field the example shows exists; every field the schema has is shown or named in the row.
      const outer = keysOf(schema)!
      expect({ type, unknown: Object.keys(message).filter((key) => !outer.includes(key)) }).toEqual({ type, unknown: [] })
      expect({ type, unnamed: outer.filter((key) => !(key in message) && !row.includes(`"${key}"`) && !row.includes(`\`${key}\``)) }).toEqual({
        type,
        unnamed: [],
      })
      const payload = message.payload
      const payloadKeys = keysOf(schema!.shape.payload)
      if (payloadKeys && typeof payload === 'object' && payload !== null) {
        expect({ type, unknown: Object.keys(payload).filter((key) => !payloadKeys.includes(key)) }).toEqual({ type, unknown: [] })
        expect({ type, unnamed: payloadKeys.filter((key) => !(key in payload) && !row.includes(`"${key}"`) && !row.includes(`\`${key}\``)) }).toEqual({
          type,
          unnamed: [],
        })
      }
    }
  })

  test('every message type of the schemas has its row (monitor: the dashboard page)', () => {
    const shown = new Set(tableRows().map(({ direction, message }) => `${direction} ${message.type}`))
    const missing = [
      ...[...toServer.keys()].filter((type) => type !== 'monitor').map((type) => `to-server ${type}`),
      // The error frame has no row: the paragraph above the table shows it.
      ...[...toAgent.keys()].filter((type) => type !== 'error').map((type) => `to-client ${type}`),
    ].filter((each) => !shown.has(each))
    expect(missing).toEqual([])
    expect(protocol).toContain('{"type":"error","payload":{"message":"…","code":"…"}}')
  })

  test('the error codes it lists are codes, and every code the gateway sends in an error frame is listed', () => {
    const intro = protocol.slice(0, protocol.indexOf('| direction |'))
    // The codes, not the message types named beside them ("before `register`").
    const listed = [...intro.slice(intro.indexOf('The codes:')).matchAll(/`([a-z_]+)`/g)]
      .map((match) => match[1]!)
      .filter((word) => !toServer.has(word) && !toAgent.has(word))
    expect(listed.length).toBeGreaterThan(10)
    expect(listed.filter((code) => !errorCodeSchema.options.includes(code as never))).toEqual([])
    // Sent by name (sendError(…, 'code')), or a registration's refusal passed on: its token's
    // (POLICY_REFUSALS' codes), no room (too_many_clients) or the node id taken (node_id_in_use).
    const sent = new Set([...gateway.matchAll(/sendError\(socket, .*, '([a-z_]+)'\)$/gm)].map((match) => match[1]!))
    for (const match of gateway.matchAll(/\{ code: '([a-z_]+)', reason:/g)) sent.add(match[1]!)
    for (const code of ['too_many_clients', 'node_id_in_use']) sent.add(code)
    expect(sent.size).toBeGreaterThan(10)
    expect([...sent].filter((code) => !listed.includes(code))).toEqual([])
  })
})

describe("docs/dashboard.md's monitoring channel", () => {
  const blocks = [...dashboard.matchAll(/```json\n([\s\S]*?)```/g)].map((match) => match[1]!)

  test('the monitor request and the error it shows are messages of the schemas', () => {
    const request = JSON.parse(blocks[0]!)
    expect(wsInboundSchema.safeParse(request).success).toBe(true)
    expect(request.type).toBe('monitor')
    const error = /`(\{"type":"error".*?\})`/.exec(dashboard)?.[1]
    expect(wsAgentInboundSchema.safeParse(JSON.parse(error!)).success).toBe(true)
  })

  test('the snapshot and the update it shows have the fields of the feed schemas, and every field is shown', () => {
    // Two messages in one block, a blank line apart.
    const [snapshot, update] = blocks[1]!.split(/\n\s*\n/).map((text) => JSON.parse(text))
    expect([snapshot.type, update.type]).toEqual(['monitor_ok', 'update'])
    for (const frame of [snapshot, update]) expect(byType(monitorFrameSchema).has(frame.type)).toBe(true)
    const same = (what: string, shown: object, schema: unknown) => {
      const keys = keysOf(schema)!
      expect({ what, keys: Object.keys(shown).sort() }).toEqual({ what, keys: [...keys].sort() })
    }
    same('monitor_ok payload', snapshot.payload, monitorSnapshotSchema)
    same('update payload', update.payload, monitorUpdateSchema)
    same('a series point', snapshot.payload.series[0], seriesPointSchema)
    same('an update point', update.payload.point, seriesPointSchema)
    same('a recent task', snapshot.payload.recent[0], taskViewSchema)
    // The status line: what the snapshot shows, and in the update what else it may carry (latency, queue).
    same('an update status', update.payload.status, statusLineSchema)
    expect(Object.keys(snapshot.payload.status).filter((key) => !keysOf(statusLineSchema)!.includes(key))).toEqual([])
  })
})
