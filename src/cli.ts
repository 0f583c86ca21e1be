#!/usr/bin/env bun
import { type Command, type Env, oneLine, UsageError } from './cli/commands/_command.ts'
import { agentCommand } from './cli/commands/agent.ts'
import { clientsCommand } from './cli/commands/clients.ts'
import { clusterCommand } from './cli/commands/cluster.ts'
import { completionCommand } from './cli/commands/completion.ts'
import { configCommand } from './cli/commands/config.ts'
import { healthcheckCommand } from './cli/commands/healthcheck.ts'
import { openapiCommand } from './cli/commands/openapi.ts'
import { serveCommand } from './cli/commands/serve.ts'
import { statusCommand } from './cli/commands/status.ts'
import { taskCommand } from './cli/commands/task.ts'
import { COMMIT, VERSION } from './version.ts'

const commands: Record<string, Command> = {
  serve: serveCommand,
  agent: agentCommand,
  task: taskCommand,
  status: statusCommand,
  healthcheck: healthcheckCommand,
  clients: clientsCommand,
  cluster: clusterCommand,
  config: configCommand,
  openapi: openapiCommand,
  completion: completionCommand(() => commands),
}

const HELP = `moonlight ${VERSION}: a regional task proxy for fleets of agents

Usage: moonlight <command> [options]

Commands:
${Object.entries(commands)
  .map(([name, command]) => `  ${name.padEnd(14)}${command.summary}`)
  .join('\n')}

Run "moonlight <command> --help" for a command's options; --version prints the version and commit.
Defaults from the environment: MLS_SERVER (the server's URL, default http://localhost:8080),
MLS_TOKEN (the token), MLS_CONFIG (serve's config file), MLS_CA (a PEM CA bundle for an https://
server from a private CA), MLS_SIGNING_SECRET (agent --http: the secret calls must be signed with).
Exit codes: 0 ok, 1 the server or the task failed, 2 bad usage.`

/**
 * Runs the CLI and returns the exit code: 0 ok, 1 the server or task failed, 2 bad usage.
 * Every failure is one line on stderr, never a stack trace. The only place that decides how the process ends.
 */
export async function main(argv: string[], env: Env = process.env): Promise<number> {
  const [name, ...args] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    if (name === undefined) {
      console.error(HELP)
      return 2
    }
    console.log(HELP)
    return 0
  }
  if (name === '--version' || name === '-v' || name === '-V') {
    console.log(`${VERSION} (commit ${COMMIT})`)
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
    return (await command.run(args, env)) ?? 0
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`moonlight ${name}: ${oneLine(error.message)} (see moonlight ${name} --help)`)
      return 2
    }
    console.error(`moonlight ${name}: ${describeError(error)}`)
    return 1
  }
}

function describeError(error: unknown): string {
  return oneLine(error instanceof Error ? error.message : String(error)) || 'failed'
}

if (import.meta.main) {
  // A failure outside a command's own flow (a stray rejection in a timer) still ends in one line.
  const crash = (error: unknown) => {
    console.error(`moonlight: ${describeError(error)}`)
    process.exit(1)
  }
  process.on('uncaughtException', crash)
  process.on('unhandledRejection', crash)
  process.exitCode = await main(process.argv.slice(2))
  // Servers and agents keep the event loop alive; once main returns, the process is done.
  process.exit()
}
