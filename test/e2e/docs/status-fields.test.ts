/**
 * docs/migrating.md's row on `GET /status` names every field a real server's answer has: the
 * original's (`server`, `websocket`, `clients`, `tasks`, `regions` and each region's `clients` and
 * `active`) and every one added since, so an old client that refuses unknown fields is warned of each.
 */
import { describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT, startHttpAgent, testScope } from '../../support/helpers.ts'

const { server, defer } = testScope()

describe("docs/migrating.md's GET /status row", () => {
  test('names every field of /status and of a region in it, and no field /status lacks', async () => {
    const row = readFileSync(join(ROOT, 'docs/migrating.md'), 'utf8')
      .split('\n')
      .find((line) => line.startsWith('| `GET /status` has more fields'))
    expect(row).toBeDefined()
    // Named in a code span (`uptime_s`), or as a key of the JSON it shows ({"clients": 2, "active": 2}).
    const named = new Set([...row!.matchAll(/`([a-z_]+)`|"([a-z_]+)":/g)].map((match) => (match[1] ?? match[2])!))
    const mls = server()
    const agent = await startHttpAgent(mls.url, { nodeId: 'status-1', region: 'us-east-1' })
    defer(agent.stop)
    const status = (await (await fetch(`${mls.url}/status`)).json()) as Record<string, unknown> & { regions: Record<string, Record<string, unknown>> }
    const region = status.regions['us-east-1']!
    const fields = [...Object.keys(status), ...Object.keys(region)]
    expect(fields.filter((field) => !named.has(field))).toEqual([])
    // The row's names are fields (the region's, or the answer's), but for the words it quotes besides.
    const quoted = new Set(['us-east-1'])
    expect([...named].filter((name) => !fields.includes(name) && !quoted.has(name))).toEqual([])
  })
})
