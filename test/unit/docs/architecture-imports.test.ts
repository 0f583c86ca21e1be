/**
 * The "may import" column of docs/architecture.md's module table, where it draws a hard line, is what
 * the sources do: a row that may import "nothing" imports no other module of src/ (but those of its
 * own row; the top-level `clock.ts`, `errors.ts`… are modules too), one that may import "types only"
 * imports types only, a module at the top of src/ imports only what its row names, `wire/` imports
 * zod and itself (and the one type it names), and a room that may "never" import another does not
 * (`cli/` takes only `http/openapi.ts` of `http/`); `packages/sdk` imports nothing from src/, not even
 * a type.
 */
import { describe, expect, test } from 'bun:test'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { ROOT } from '../../support/helpers.ts'

const SRC = join(ROOT, 'src')
const doc = readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8')

interface Import {
  /** The module's path under src/ (`fleet/registry.ts`, `clock.ts`, `../package.json`), or the bare specifier (`zod`, `node:fs`). */
  target: string
  /** A module of this repository (a relative specifier), not a package (`zod`, `node:fs`, `bun`). */
  local: boolean
  typeOnly: boolean
}

function modules(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? modules(path) : name.endsWith('.ts') ? [path] : []
  })
}

/** A file's static imports and re-exports (`import type` included), resolved against `base`. */
function importsOf(file: string, base = SRC): Import[] {
  const text = readFileSync(file, 'utf8')
  return [...text.matchAll(/(?:^|\n)\s*(import|export)(\s+type)?\s[^;]*?from\s+'([^']+)'/g)].map((match) => {
    const specifier = match[3]!
    const local = specifier.startsWith('.')
    const target = local ? relative(base, normalize(join(dirname(file), specifier))) : specifier
    return { target, local, typeOnly: match[2] !== undefined }
  })
}

/** The module table's rows: the room each belongs to, the files its first cell names, and its last cell. */
function rows(): Array<{ room: string; files: string[]; mayImport: string; line: string }> {
  const found: Array<{ room: string; files: string[]; mayImport: string; line: string }> = []
  let room = 'top'
  for (const line of doc.split('\n')) {
    if (!line.startsWith('| ') || line.startsWith('| room') || line.startsWith('|---')) continue
    const cells = line.split(' | ')
    const opened = /^\| \*\*`?([a-z-]+)\/?`?\*\*/.exec(line)
    if (opened) room = opened[1]!
    const files = [...cells[0]!.matchAll(/`([\w/.-]+\.ts)`/g)].map((match) => (room === 'top' ? match[1]! : `${room}/${match[1]!}`))
    found.push({ room, files, mayImport: cells.at(-1)!.replace(/ \|$/, ''), line })
  }
  return found
}

describe("docs/architecture.md's import rules", () => {
  const table = rows()

  test('a row that may import nothing imports no module of src/ but its row-mates; "types only" imports types', () => {
    // packages/sdk's row names no module of src/: the last test holds it to its rule.
    const nothing = table.filter((row) => row.mayImport.startsWith('nothing') && row.files.length > 0)
    expect(nothing.length).toBeGreaterThanOrEqual(4)
    const broken: string[] = []
    for (const row of nothing) {
      for (const file of row.files) {
        for (const { target, local } of importsOf(join(SRC, file))) if (local && !row.files.includes(target)) broken.push(`${file} imports ${target}`)
      }
    }
    for (const row of table.filter((each) => each.mayImport === 'types only')) {
      for (const file of row.files)
        for (const { target, typeOnly } of importsOf(join(SRC, file))) if (!typeOnly) broken.push(`${file} imports ${target} (not a type)`)
    }
    expect(broken).toEqual([])
  })

  test('a module at the top of src/ imports of the repository only what its row names (clock.ts: nothing; errors.ts: wire/errors)', () => {
    const top = table.filter((row) => row.room === 'top' && row.files.length > 0)
    expect(top.flatMap((row) => row.files)).toEqual(expect.arrayContaining(['cli.ts', 'clock.ts', 'errors.ts', 'version.ts']))
    const broken: string[] = []
    for (const row of top) {
      // `cli/` allows a room, `version` a module, `package.json` the file beside src/.
      const named = [...row.mayImport.matchAll(/`([\w/.-]+)`/g)].map((match) => match[1]!)
      const allowed = (target: string) =>
        named.some((name) => (name.endsWith('/') ? target.startsWith(name) : [name, `${name}.ts`, `../${name}`].includes(target)))
      for (const file of row.files)
        for (const { target, local } of importsOf(join(SRC, file))) if (local && !allowed(target)) broken.push(`${file} imports ${target}`)
    }
    expect(broken).toEqual([])
  })

  test('wire/ imports zod and itself, and of the rest only the types its row names', () => {
    const row = table.find((each) => each.room === 'wire')!
    expect(row.mayImport).toStartWith('zod and one another only')
    const broken = modules(join(SRC, 'wire')).flatMap((file) =>
      importsOf(file)
        .filter(({ target, typeOnly }) => !(target === 'zod' || target.startsWith('wire/') || (typeOnly && target.startsWith('observe/tracing/'))))
        .map(({ target }) => `${relative(SRC, file)} imports ${target}`),
    )
    expect(broken).toEqual([])
  })

  test('a room that may never import another does not (cli/ takes of http/ only what its row says)', () => {
    const rules = table.flatMap((row) =>
      [...row.mayImport.matchAll(/never `([a-z-]+)\/`(?: or `([a-z-]+)\/`)?/g)].flatMap((match) =>
        [match[1]!, match[2]].filter(Boolean).map((banned) => ({ room: row.room, banned: banned! })),
      ),
    )
    expect(rules).toEqual(
      expect.arrayContaining([
        { room: 'http', banned: 'ws' },
        { room: 'ws', banned: 'http' },
        { room: 'cli', banned: 'ws' },
      ]),
    )
    const broken: string[] = []
    for (const { room, banned } of rules)
      for (const file of modules(join(SRC, room)))
        for (const { target } of importsOf(file)) if (target.startsWith(`${banned}/`)) broken.push(`${relative(SRC, file)} imports ${target}`)
    // "of `http/` only `openapi.ts`"
    const cli = table.find((row) => row.room === 'cli')!
    const allowed = /of `http\/` only `([\w.-]+)`/.exec(cli.mayImport)?.[1]
    for (const file of modules(join(SRC, 'cli')))
      for (const { target } of importsOf(file))
        if (target.startsWith('http/') && target !== `http/${allowed}`) broken.push(`${relative(SRC, file)} imports ${target}`)
    expect(broken).toEqual([])
  })

  test('packages/sdk imports nothing from src/, not even a type (nor any package: no runtime dependency)', () => {
    const sdk = join(ROOT, 'packages/sdk/src')
    const broken = modules(sdk).flatMap((file) =>
      importsOf(file, sdk)
        // Outside its own src/ (a relative path climbing out of it), or a package but Node's own.
        .filter(({ target, local, typeOnly }) => (local ? target.startsWith('..') : !typeOnly && !target.startsWith('node:')))
        .map(({ target }) => `${relative(ROOT, file)} imports ${target}`),
    )
    expect(broken).toEqual([])
  })
})
