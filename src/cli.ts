#!/usr/bin/env bun
import { parseArgs } from 'node:util'
import { ConfigError } from './config.ts'
import { serve } from './commands/serve.ts'
import { VERSION } from './version.ts'

/** A mistake in how the command was called: exit code 2 and a one-line message. */
export class UsageError extends Error {
  override name = 'UsageError'
}

interface Command {
  summary: string
  usage: string
  run: (args: string[]) => Promise<number | void>
}

const commands: Record<string, Command> = {
  serve: {
    summary: 'run the server',
    usage: `moonlight serve [--config PATH] [--port N] [--host H]

Starts Moonlight Server. Config: --config, $MLS_CONFIG, ./mls.json, ~/.config/moonlight/mls.json,
/etc/moonlight/mls.json, else the embedded default. SIGHUP reloads it; SIGTERM stops gracefully.`,
    run: async (args) => {
      const { values } = parse(args, { config: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' } })
      await serve({ config: values.config, port: optionalInt(values.port, '--port'), host: values.host })
    },
  },
}

const HELP = `moonlight ${VERSION}: a regional task proxy for fleets of agents

Usage: moonlight <command> [options]

Commands:
${Object.entries(commands)
  .map(([name, command]) => `  ${name.padEnd(14)}${command.summary}`)
  .join('\n')}

Run "moonlight <command> --help" for a command's options. --version prints the version.`

/** Parses options strictly; --help is always accepted. */
export function parse<T extends Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
}

export function optionalInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const number = Number(value)
  if (!Number.isInteger(number) || number < 0) throw new UsageError(`${flag} must be a whole number, got "${value}"`)
  return number
}

/** Runs the CLI; returns the exit code. The only place that decides how the process ends. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(HELP)
    return name === undefined ? 2 : 0
  }
  if (name === '--version' || name === '-v') {
    console.log(VERSION)
    return 0
  }
  const command = commands[name]
  if (!command) {
    console.error(`moonlight: unknown command "${name}" (see moonlight --help)`)
    return 2
  }
  if (args.includes('--help') || args.includes('-h')) {
    console.log(command.usage)
    return 0
  }
  try {
    return (await command.run(args)) ?? 0
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`moonlight ${name}: ${error.message}`)
      return 2
    }
    if (error instanceof ConfigError) {
      console.error(error.message)
      return 1
    }
    console.error(`moonlight ${name}: ${(error as Error).message ?? String(error)}`)
    return 1
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2))
  // Servers and agents keep the event loop alive; once main returns, the process is done.
  process.exit()
}
