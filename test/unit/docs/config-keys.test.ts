/**
 * Every config key the docs name by its dotted path (`health.failures_to_eject`, `ws.write_timeout`,
 * `routing.retry_budget`) is a key of the config: a row of docs/configuration.md (generated from the
 * schema, and held to it by test/unit/config/reference.test.ts) or the section holding such rows.
 */
import { describe, expect, test } from 'bun:test'
import { PAGES, pageText } from '../../support/docs.ts'

const reference = pageText('docs/configuration.md')
const KEYS = [...reference.matchAll(/^\| `([a-z_.]+)` \|/gm)].map((match) => match[1]!)
const SECTIONS = new Set(KEYS.filter((key) => key.includes('.')).map((key) => key.split('.')[0]!))
/** Every page but the reference itself. */
const OTHER_PAGES = PAGES.filter((page) => page !== 'docs/configuration.md')

describe('the config keys the docs name', () => {
  test('are keys of the config (a row of docs/configuration.md, or a section of such rows)', () => {
    expect(KEYS.length).toBeGreaterThan(60)
    const unknown: string[] = []
    let checked = 0
    for (const page of OTHER_PAGES) {
      const text = pageText(page)
      // A dotted path in a code span, starting with a section of the config: `queue.timeout`, `cluster.relay_batch`.
      for (const match of text.matchAll(/`([a-z_]+(?:\.[a-z_]+)+)`/g)) {
        const path = match[1]!
        // A file name (`health.ts`, `ws.ts`) is not a key.
        if (!SECTIONS.has(path.split('.')[0]!) || /\.(?:ts|js|md|json)$/.test(path)) continue
        checked++
        if (!KEYS.includes(path) && !KEYS.some((key) => key.startsWith(`${path}.`))) unknown.push(`${page}: ${path}`)
      }
    }
    expect(checked).toBeGreaterThan(40)
    expect(unknown).toEqual([])
  })
})
