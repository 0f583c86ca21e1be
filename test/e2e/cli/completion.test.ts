/**
 * `moonlight completion bash|zsh|fish`: each script loads in its real shell and completes commands,
 * subcommands and flags (fish and bash are asked for completions; zsh, whose completion needs a
 * terminal, is checked to load and to define the function).
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runMain } from '../../support/cli.ts'
import { ensureCommand } from '../../support/debian-packages.ts'

const dir = mkdtempSync(join(tmpdir(), 'mls-completion-'))

async function script(shell: string): Promise<string> {
  const printed = await runMain(['completion', shell])
  expect(printed.code).toBe(0)
  const file = join(dir, `moonlight.${shell}`)
  writeFileSync(file, printed.stdout)
  return file
}

function run(argv: string[]): string {
  const child = Bun.spawnSync(argv, { stdout: 'pipe', stderr: 'pipe' })
  if (child.exitCode !== 0) throw new Error(`${argv.join(' ')} failed: ${child.stderr.toString()}`)
  return child.stdout.toString()
}

describe('moonlight completion', () => {
  test('bash: commands, subcommands and each command’s flags', async () => {
    const file = await script('bash')
    const complete = (words: string[]) =>
      run(['bash', '-c', `source ${file}; COMP_WORDS=(${words.join(' ')}); COMP_CWORD=${words.length - 1}; _moonlight; echo "\${COMPREPLY[@]}"`]).trim()
    expect(complete(['moonlight', 'ta'])).toBe('task')
    expect(complete(['moonlight', 'task', 'ca'])).toBe('cancel')
    expect(complete(['moonlight', 'task', '--idem'])).toBe('--idempotency-key')
    expect(complete(['moonlight', 'agent', '--exec-t'])).toBe('--exec-timeout')
    expect(complete(['moonlight', 'co']).split(' ').sort()).toEqual(['completion', 'config'])
  })

  test('fish: complete -C answers from the script', async () => {
    const fish = ensureCommand('fish', 'fish', 'to check moonlight completion fish')
    const file = await script('fish')
    const complete = (line: string) => run([fish, '--no-config', '-c', `source ${file}; complete -C '${line}'`]).trim()
    expect(complete('moonlight ser')).toMatch(/^serve\t/)
    expect(complete('moonlight task --idem')).toBe('--idempotency-key')
  }, 300_000)

  test('zsh: the script loads with compinit and defines _moonlight', async () => {
    const zsh = ensureCommand('zsh', 'zsh', 'to check moonlight completion zsh')
    const file = await script('zsh')
    expect(run([zsh, '-n', file])).toBe('')
    expect(run([zsh, '-f', '-c', `autoload -U compinit && compinit -u -D && source ${file} && whence -w _moonlight`]).trim()).toBe('_moonlight: function')
  }, 300_000)

  test('an unknown shell is a usage error', async () => {
    const result = await runMain(['completion', 'tcsh'])
    expect([result.code, result.stderr.trim()]).toEqual([2, 'moonlight completion: unknown shell "tcsh" (bash, zsh or fish) (see moonlight completion --help)'])
  })
})
