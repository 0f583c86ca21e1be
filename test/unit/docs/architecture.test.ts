/**
 * docs/architecture.md matches the code: every module under src/ is named in it (by its room and
 * file, or by its file in its room's row), and every path it names exists, so a reader can go from
 * any row of its table to the file and no file is missing from the map.
 */
import { describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { ROOT } from '../../support/helpers.ts'

const SRC = join(ROOT, 'src')
const doc = readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8')

function modules(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? modules(path) : name.endsWith('.ts') ? [relative(SRC, path)] : []
  })
}

/**
 * The module table's rows by room: a row whose first cell starts with a bold room (**`fleet/`**)
 * opens that room, and the rows after it belong to it until the next bold room.
 */
function rowsByRoom(): Map<string, string> {
  const rooms = new Map<string, string>()
  let room = 'top'
  for (const line of doc.split('\n')) {
    if (!line.startsWith('| ')) continue
    const opened = /^\| \*\*`?([a-z-]+)\/?`?\*\*/.exec(line)
    if (opened) room = opened[1]!
    rooms.set(room, `${rooms.get(room) ?? ''}\n${line}`)
  }
  return rooms
}

describe('docs/architecture.md', () => {
  test('names every module of src/', () => {
    const all = modules(SRC)
    expect(all.length).toBeGreaterThan(80)
    const rooms = rowsByRoom()
    const missing = all.filter((path) => {
      if (doc.includes(path)) return false
      const parts = path.split('/')
      const file = parts.at(-1)!
      // A file named in its room's row, e.g. `registry.ts` in the fleet/ row, or `pool.ts` under http-client/.
      const room = parts[0]!
      return parts.length === 1 ? !doc.includes(`\`${file}\``) : !(rooms.get(room) ?? '').includes(file)
    })
    expect(missing).toEqual([])
  })

  test('every src/ path it names exists', () => {
    const named = [...doc.matchAll(/`((?:src\/)?(?:fleet|tasks|security|observe|config|server|http|ws|transports|cluster|wire|cli)\/[\w./-]+\.ts)`/g)].map(
      (match) => match[1]!,
    )
    expect(named.length).toBeGreaterThan(20)
    const gone = named.filter((path) => !existsSync(join(SRC, path.replace(/^src\//, ''))))
    expect(gone).toEqual([])
  })
})
