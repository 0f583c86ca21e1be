/**
 * Every `moonlight` command line the docs show names a command that exists, and each flag on it is
 * one that command's parser accepts (an unknown flag is the first thing a reader copying it meets);
 * the flags the agent and command-line pages name in their prose are accepted too. A flag is tried
 * by running the command with it and a flag no command has after it: the parser stops at the first
 * flag it does not know, so nothing runs, and the error names which one.
 */
import { describe, expect, test } from 'bun:test'
import { runMain } from '../../support/cli.ts'
import { PAGES, splitFences, pageText as text } from '../../support/docs.ts'

const COMMANDS = ['serve', 'agent', 'task', 'status', 'healthcheck', 'clients', 'cluster', 'config', 'openapi', 'completion']
const SUBCOMMANDS: Record<string, string[]> = { task: ['get', 'cancel'], config: ['check'] }
const NOT_A_FLAG = '--zz-no-such-flag'

/** The page split into code (fenced block lines, inline code spans) and prose (the rest, code spans removed). */
function split(markdown: string): { code: string[]; prose: string } {
  const { prose: lines, code } = splitFences(markdown)
  let prose = ''
  for (const line of lines) {
    for (const span of line.matchAll(/`([^`]+)`/g)) code.push(span[1]!)
    prose += `${line.replace(/`[^`]+`/g, ' ')}\n`
  }
  return { code, prose }
}

interface Use {
  page: string
  command: string
  sub?: string
  flag: string
  line: string
}

/**
 * The command lines in a piece of code: `moonlight <command> …` (also `npx moonlight`, `dist/moonlight`,
 * `src/cli.ts <command>`) up to the end of the shell command (a pipe, `&`, `;`, a comment). Quoted
 * arguments are blanked first, so a payload or an --exec command cannot end it or add flags.
 */
function commandLines(page: string, code: string): { uses: Use[]; unknown: string[] } {
  const uses: Use[] = []
  const unknown: string[] = []
  const line = code.replace(/\\\|/g, ' ').replace(/'[^']*'|"[^"]*"/g, 'X')
  for (const match of line.matchAll(/(?:^\s*|\$ |npx |sudo |exec |\/|\(|&& |; |\| )(?:moonlight|cli\.ts) ([a-z][a-z-]*)([^|&;#]*)/g)) {
    const command = match[1]!
    if (!COMMANDS.includes(command)) {
      unknown.push(`${page}: moonlight ${command} (${code.trim()})`)
      continue
    }
    // An unclosed quote (a multi-line --exec) ends the command line where it opens.
    const rest = match[2]!.split(/['"]/)[0]!
    const sub = SUBCOMMANDS[command]?.find((word) => new RegExp(`^\\s+${word}\\b`).test(rest))
    for (const flag of rest.match(/(?<![\w-])--[a-z][a-z-]*/g) ?? []) if (flag !== '--help') uses.push({ page, command, sub, flag, line: code.trim() })
  }
  return { uses, unknown }
}

/** Whether `moonlight <command> [<sub> ID] <flag>` gets past the parser as far as the flag after it. */
async function accepts(command: string, sub: string | undefined, flag: string): Promise<{ accepted: boolean; stderr: string }> {
  const args = [command, ...(sub === undefined ? [] : sub === 'check' ? ['check'] : [sub, 'some-task-id']), flag, NOT_A_FLAG]
  const { code, stderr } = await runMain(args)
  // The parser's refusal of the flag after it, or of a string flag given no value: either way the flag is known.
  const accepted = code === 2 && !stderr.includes(`Unknown option '${flag}'`) && (stderr.includes(NOT_A_FLAG) || stderr.includes(`'${flag}`))
  return { accepted, stderr }
}

const everything = PAGES.map((page) => {
  const { code, prose } = split(text(page))
  const found = code.map((piece) => commandLines(page, piece))
  return { page, prose, uses: found.flatMap((each) => each.uses), unknown: found.flatMap((each) => each.unknown) }
})

describe('the moonlight command lines in the docs', () => {
  test('name only commands that exist', () => {
    expect(everything.flatMap((each) => each.unknown)).toEqual([])
  })

  test("use only flags the command's parser accepts", async () => {
    const uses = everything.flatMap((each) => each.uses)
    // README, agents, command line, routing, cluster, operations: dozens of command lines.
    expect(uses.length).toBeGreaterThan(60)
    const refused: string[] = []
    const tried = new Map<string, boolean>()
    for (const use of uses) {
      const key = `${use.command} ${use.sub ?? ''} ${use.flag}`
      if (!tried.has(key)) tried.set(key, (await accepts(use.command, use.sub, use.flag)).accepted)
      if (!tried.get(key)) refused.push(`${use.page}: moonlight ${use.command}${use.sub ? ` ${use.sub}` : ''} ${use.flag} (${use.line})`)
    }
    expect(refused).toEqual([])
  })

  test('the parser check can tell: an unknown flag is refused, a known one of each kind accepted', async () => {
    expect((await accepts('task', undefined, '--frobnicate')).accepted).toBe(false)
    expect((await accepts('agent', undefined, '--no-slots')).accepted).toBe(true)
    expect((await accepts('agent', undefined, '--exec-timeout')).accepted).toBe(true)
    expect((await accepts('task', 'get', '--wait')).accepted).toBe(true)
    expect((await accepts('task', 'get', '--broadcast')).accepted).toBe(false)
  })
})

describe('the flags named in prose', () => {
  test('"Run an agent" (docs/agents.md): every flag is one moonlight agent accepts', async () => {
    const page = text('docs/agents.md')
    const section = page.slice(page.indexOf('\n## Run an agent\n'), page.indexOf('\n## ', page.indexOf('\n## Run an agent\n') + 1))
    // Here flags are named in code spans of the prose, not on command lines: take every one.
    const flags = [...new Set(split(section).code.flatMap((piece) => (piece.startsWith('moonlight ') ? [] : (piece.match(/(?<![\w-])--[a-z][a-z-]*/g) ?? []))))]
    expect(flags.length).toBeGreaterThan(12)
    const refused: string[] = []
    for (const flag of flags) if (!(await accepts('agent', undefined, flag)).accepted) refused.push(flag)
    expect(refused).toEqual([])
  })

  test('docs/cli.md and docs/routing.md: every flag named in a code span is one some moonlight command accepts', async () => {
    const flags = new Set<string>()
    for (const page of ['docs/cli.md', 'docs/routing.md']) {
      for (const piece of split(text(page)).code.filter((piece) => !piece.includes('\n'))) {
        // Fenced lines are command lines (checked above); spans like `--timeout S` name a flag alone.
        if (/^(?:moonlight|npm|node|bun|\.\/dist|curl|echo|id=)/.test(piece.trim())) continue
        for (const flag of piece.match(/(?<![\w-])--[a-z][a-z-]*/g) ?? []) flags.add(flag)
      }
    }
    expect(flags.size).toBeGreaterThan(8)
    const refused: string[] = []
    for (const flag of flags) {
      let known = false
      for (const command of COMMANDS) {
        for (const sub of [undefined, ...(SUBCOMMANDS[command] ?? [])]) known ||= (await accepts(command, sub, flag)).accepted
      }
      if (!known) refused.push(flag)
    }
    expect(refused).toEqual([])
  })
})
