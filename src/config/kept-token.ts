import { closeSync, constants, fstatSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'
import { ConfigError } from './config.ts'

/** A token that means every role, made up when none is configured: `mls_` and 192 random bits. */
export function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24))
  return `mls_${Buffer.from(bytes).toString('base64url')}`
}

/**
 * Where the generated token is kept between starts: `$XDG_STATE_HOME/moonlight/token`, else
 * `~/.local/state/moonlight/token` (the XDG base directory rule: a relative or empty XDG_STATE_HOME is ignored).
 */
export function keptTokenPath(env: Record<string, string | undefined>, home: string): string {
  const stateHome = env.XDG_STATE_HOME
  return join(stateHome && isAbsolute(stateHome) ? stateHome : join(home, '.local', 'state'), 'moonlight', 'token')
}

export interface KeptToken {
  token: string
  path: string
  /** read: the file held it; created: made now and written there; not_kept: made now, the file could not be written (`problem` says why). */
  how: 'read' | 'created' | 'not_kept'
  problem?: string
}

// What a kept token must be to be used: one the config would accept, with nothing a file edit could slip in.
const KEPT_TOKEN = /^[\x21-\x7e]{8,1024}$/

/**
 * The token kept at `path`, or a new one written there (mode 0600, in a directory of mode 0700).
 * Two servers starting at once take the same token: the file appears whole or not at all (a hard link
 * of a finished file, which fails if the other was first), and the loser reads the winner's.
 */
export function keepToken(path: string, make: () => string = randomToken): KeptToken {
  const existing = readKept(path)
  if (existing !== undefined) return { token: existing, path, how: 'read' }
  const token = make()
  const draft = `${path}.${process.pid}.${Date.now()}`
  try {
    mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 })
    writeFileSync(draft, `${token}\n`, { mode: 0o600, flag: 'wx' })
  } catch (error) {
    // A read-only or missing home (a service's sandbox) must not stop the server: it runs with the token it printed.
    return { token, path, how: 'not_kept', problem: (error as Error).message }
  }
  try {
    linkSync(draft, path)
    return { token, path, how: 'created' }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') return { token, path, how: 'not_kept', problem: (error as Error).message }
    return { token: readKept(path) ?? token, path, how: 'read' }
  } finally {
    unlinkSync(draft)
  }
}

/**
 * The token in the file, or undefined if there is no file; a file that holds no token is an error, not a reason to make another.
 * So is one someone else could have put there (a symbolic link, another user's file, one others may write) or read:
 * a token planted by another user would let that user in with every role.
 */
function readKept(path: string): string | undefined {
  let fd: number
  try {
    // O_NOFOLLOW: a link is refused rather than followed; O_NONBLOCK: a FIFO planted there does not hold start-up.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined
    if (code === 'ELOOP') throw unsafe(path, 'is a symbolic link')
    throw new ConfigError(`cannot read the kept token ${path}: ${(error as Error).message}`)
  }
  let text: string
  try {
    const file = fstatSync(fd)
    if (!file.isFile()) throw unsafe(path, file.isDirectory() ? 'is a directory' : 'is not a regular file')
    if (file.uid !== process.getuid?.()) throw unsafe(path, `belongs to another user (uid ${file.uid})`)
    if ((file.mode & 0o077) !== 0) throw unsafe(path, `may be read or written by others (mode ${(file.mode & 0o777).toString(8).padStart(4, '0')})`)
    text = readFileSync(fd, 'utf8')
  } finally {
    closeSync(fd)
  }
  const token = text.trim()
  if (!KEPT_TOKEN.test(token))
    throw new ConfigError(`${path} should hold the token generated at an earlier start, and holds none: delete it for a new one, or configure tokens`)
  return token
}

function unsafe(path: string, problem: string): ConfigError {
  return new ConfigError(
    `the kept token ${path} ${problem}: a token is taken only from a file of this user's own that no one else may read or write; delete it for a new one, or configure tokens`,
  )
}
