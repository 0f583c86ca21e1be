import { parseArgs } from 'node:util'
import { readCaBundle, TlsFileError } from '../../security/pem-files.ts'
import { type ServerTarget, VIEW_TIMEOUT_S } from '../api-client.ts'

/** The environment a command reads its defaults from (MLS_SERVER, MLS_TOKEN, MLS_CONFIG, MLS_CA, MLS_SIGNING_SECRET). */
export type Env = Record<string, string | undefined>

/** One `moonlight <name>`: its help text and how it runs. Returns the exit code (void = 0). */
export interface Command {
  summary: string
  usage: string
  // biome-ignore lint/suspicious/noConfusingVoidType: a command with no exit code of its own returns nothing, which means 0.
  run: (args: string[], env: Env) => Promise<number | void>
}

/** A mistake in how the command was called: exit code 2 and a one-line message. */
export class UsageError extends Error {
  override name = 'UsageError'
}

export const DEFAULT_SERVER = 'http://localhost:8080'

type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>

/** The flags of the commands that ask the server for one of its token-guarded views (clients, cluster, task cancel). */
export const VIEW_FLAGS = {
  server: { type: 'string' },
  token: { type: 'string' },
  ca: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
} as const satisfies OptionSpec

/** Parses options strictly (an unknown flag is a usage error); --help is always accepted. */
export function parse<T extends OptionSpec>(args: string[], options: T) {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  } catch (error) {
    // util.parseArgs follows its first sentence with advice about "--" that does not apply here.
    throw new UsageError((error as Error).message.split(/\.\s/)[0] ?? 'invalid arguments')
  }
}

/** A VIEW_FLAGS command's arguments (no positionals): where to ask, with what token and CA, how long to wait, and whether to print JSON. */
export function readViewArgs(args: string[], env: Env): { target: ServerTarget; timeoutMs: number; json: boolean } {
  const { values, positionals } = parse(args, VIEW_FLAGS)
  noPositionals(positionals)
  const timeoutS = optionalSeconds(values.timeout, '--timeout') ?? VIEW_TIMEOUT_S
  return {
    target: { server: serverUrl(values.server, env), token: tokenOf(values.token, env), ca: caOf(values.ca, env) },
    timeoutMs: timeoutS * 1000,
    json: values.json === true,
  }
}

/** Rejects positionals a command does not take, so a typo is not silently ignored. */
export function noPositionals(positionals: string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`)
}

export function optionalInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const number = Number(value)
  if (value.trim() === '' || !Number.isInteger(number) || number < 0) throw new UsageError(`${flag} must be a whole number, got "${value}"`)
  return number
}

/** A duration or similar in seconds; must be a positive number. */
export function optionalSeconds(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined
  const number = Number(value)
  if (value.trim() === '' || !Number.isFinite(number) || number <= 0) throw new UsageError(`${flag} must be a positive number of seconds, got "${value}"`)
  return number
}

/** The server's http(s) base URL from --server, else $MLS_SERVER, else the default; no trailing slash. */
export function serverUrl(flag: string | undefined, env: Env): string {
  const raw = flag ?? (env.MLS_SERVER || DEFAULT_SERVER)
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new UsageError(`--server must be an http(s) URL like ${DEFAULT_SERVER}, got "${raw}"`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--server must be an http(s) URL (the ws URL is derived from it), got "${raw}"`)
  }
  return url.href.replace(/\/+$/, '')
}

/** The token from --token, else $MLS_TOKEN; undefined when neither is set. */
export function tokenOf(flag: string | undefined, env: Env): string | undefined {
  return flag ?? (env.MLS_TOKEN || undefined)
}

/** The PEM CA bundle named by --ca, else $MLS_CA, read and checked; undefined when neither is set (the system's CAs verify the server). */
export function caOf(flag: string | undefined, env: Env): string | undefined {
  const path = flag ?? (env.MLS_CA || undefined)
  if (path === undefined) return undefined
  try {
    return readCaBundle(path, flag === undefined ? 'MLS_CA' : '--ca')
  } catch (error) {
    if (error instanceof TlsFileError) throw new UsageError(error.message)
    throw error
  }
}

/** Collapses a possibly multi-line message to one line, for stderr. */
export function oneLine(message: string): string {
  return message
    .replace(/:\s*\n\s*/g, ': ')
    .replace(/\s*\n\s*/g, '; ')
    .trim()
}
