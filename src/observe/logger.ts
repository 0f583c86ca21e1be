/**
 * The server's log: one line per event, as text (a timestamp, the level, the message, then any
 * fields as key=value) or as JSON (one object per line: time, level, msg and the fields), filtered
 * by level. Settings are read at each line, so a reload applies at once. What a line may carry is
 * decided by its callers: node ids, regions, task ids, statuses and addresses — never a token, a
 * password or a payload.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFields = Record<string, string | number | boolean | null | undefined>

/** One line: the message, and optionally its level (info) and fields. */
export type Log = (message: string, entry?: { level?: LogLevel; fields?: LogFields }) => void

export interface LogSettings {
  format: 'text' | 'json'
  level: LogLevel
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }
const PREFIX = '[mls] '

export function createLog(settings: () => LogSettings, write: (line: string, level: LogLevel) => void, now: () => number): Log {
  return (message, entry = {}) => {
    const level = entry.level ?? 'info'
    const { format, level: threshold } = settings()
    if (RANK[level] < RANK[threshold]) return
    write(formatLine(format, new Date(now()).toISOString(), level, message, entry.fields), level)
  }
}

/** A line of either format; exported for the unit tests. */
export function formatLine(format: LogSettings['format'], time: string, level: LogLevel, message: string, fields: LogFields = {}): string {
  const present = Object.entries(fields).filter(([, value]) => value !== undefined)
  if (format === 'json') {
    // The "[mls] " that tells the server's text lines from an agent's is noise in a structured line.
    const msg = message.startsWith(PREFIX) ? message.slice(PREFIX.length) : message
    return JSON.stringify({ time, level, msg, ...Object.fromEntries(present) })
  }
  const extra = present.map(([key, value]) => ` ${key}=${typeof value === 'string' && /[\s"=]/.test(value) ? JSON.stringify(value) : value}`).join('')
  return `${time} ${level.toUpperCase().padEnd(5)} ${message}${extra}`
}

/** Writes errors and warnings to stderr, the rest to stdout, as the server always has. */
export function consoleWrite(line: string, level: LogLevel): void {
  if (level === 'error') console.error(line)
  else if (level === 'warn') console.warn(line)
  else console.log(line)
}
