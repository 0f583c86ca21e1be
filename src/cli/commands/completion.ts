import { type Command, type Env, parse, UsageError } from './_command.ts'

/** What completes after a command: its subcommands (task get, config check) and its flags, read from its own usage text. */
interface CommandWords {
  name: string
  summary: string
  subcommands: string[]
  flags: string[]
}

const SUBCOMMANDS: Record<string, string[]> = { task: ['get', 'cancel'], config: ['check'], completion: ['bash', 'zsh', 'fish'] }

/** `moonlight completion bash|zsh|fish`: a completion script built from the commands' own usage, so it never falls behind them. */
export function completionCommand(commands: () => Record<string, Command>): Command {
  return {
    summary: 'print a shell completion script (bash, zsh or fish)',
    usage: `moonlight completion bash|zsh|fish

Prints a completion script for the shell: commands, their subcommands and their flags.
  bash: source <(moonlight completion bash)        (or save it to /etc/bash_completion.d/moonlight)
  zsh:  source <(moonlight completion zsh)         (or save it as _moonlight on your $fpath)
  fish: moonlight completion fish > ~/.config/fish/completions/moonlight.fish`,
    run: async (args: string[], _env: Env) => {
      const { positionals } = parse(args, {})
      const [shell, extra] = positionals
      if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`)
      const words = Object.entries(commands()).map(([name, command]) => wordsOf(name, command))
      if (shell === 'bash') process.stdout.write(bashScript(words))
      else if (shell === 'zsh') process.stdout.write(zshScript(words))
      else if (shell === 'fish') process.stdout.write(fishScript(words))
      else throw new UsageError(shell === undefined ? 'which shell? moonlight completion bash|zsh|fish' : `unknown shell "${shell}" (bash, zsh or fish)`)
    },
  }
}

function wordsOf(name: string, command: Command): CommandWords {
  const flags = [...new Set(command.usage.match(/--[a-z][a-z-]*/g) ?? [])].filter((flag) => flag !== '--help')
  return { name, summary: command.summary, subcommands: SUBCOMMANDS[name] ?? [], flags: [...flags, '--help'] }
}

function bashScript(words: CommandWords[]): string {
  const cases = words.map(({ name, subcommands, flags }) => `    ${name}) words="${[...subcommands, ...flags].join(' ')}" ;;`).join('\n')
  return `# moonlight completion for bash: source <(moonlight completion bash)
_moonlight() {
  local current="\${COMP_WORDS[COMP_CWORD]}" words
  if [ "$COMP_CWORD" -eq 1 ]; then
    words="${words.map(({ name }) => name).join(' ')} --help --version"
  else
    case "\${COMP_WORDS[1]}" in
${cases}
    *) words="" ;;
    esac
  fi
  COMPREPLY=($(compgen -W "$words" -- "$current"))
}
complete -o default -F _moonlight moonlight
`
}

function zshScript(words: CommandWords[]): string {
  const quote = (text: string) => text.replace(/'/g, "'\\''").replace(/:/g, '\\:')
  const commandList = words.map(({ name, summary }) => `    '${name}:${quote(summary)}'`).join('\n')
  const cases = words.map(({ name, subcommands, flags }) => `    ${name}) compadd -- ${[...subcommands, ...flags].join(' ')} ;;`).join('\n')
  return `#compdef moonlight
# moonlight completion for zsh: source <(moonlight completion zsh), or save as _moonlight on $fpath
_moonlight() {
  local -a commands
  commands=(
${commandList}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  case "\${words[2]}" in
${cases}
  esac
}
compdef _moonlight moonlight
`
}

function fishScript(words: CommandWords[]): string {
  const quote = (text: string) => `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
  const lines = ['# moonlight completion for fish: moonlight completion fish > ~/.config/fish/completions/moonlight.fish', 'complete -c moonlight -f']
  for (const { name, summary, subcommands, flags } of words) {
    lines.push(`complete -c moonlight -n __fish_use_subcommand -a ${name} -d ${quote(summary)}`)
    for (const sub of subcommands) lines.push(`complete -c moonlight -n '__fish_seen_subcommand_from ${name}' -a ${sub}`)
    for (const flag of flags) lines.push(`complete -c moonlight -n '__fish_seen_subcommand_from ${name}' -l ${flag.slice(2)}`)
  }
  return `${lines.join('\n')}\n`
}
