/** Writing results: JSON pretty on a terminal and exact when piped; aligned tables for people. */

/** Whether stdout is a terminal (a person reading) rather than a pipe or file (a program reading). */
export function stdoutIsTerminal(): boolean {
  return process.stdout.isTTY === true
}

/**
 * Prints a JSON body: pretty-printed on a terminal, byte-for-byte when piped so `| jq` and
 * `$(...)` see exactly what the server sent (its `bytes`: an agent's answer may be binary, an image).
 * A body that is not JSON is printed as-is.
 */
export function printBody({ body, bytes }: { body: string; bytes: Uint8Array }, terminal = stdoutIsTerminal()): void {
  if (!terminal) {
    process.stdout.write(bytes)
    return
  }
  let value: unknown
  try {
    value = JSON.parse(body)
  } catch {
    process.stdout.write(body.endsWith('\n') ? body : `${body}\n`)
    return
  }
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
}

/** Prints a value as JSON, pretty on a terminal, one line when piped. */
export function printJson(value: unknown, terminal = stdoutIsTerminal()): void {
  process.stdout.write(`${terminal ? JSON.stringify(value, null, 2) : JSON.stringify(value)}\n`)
}

/** Whether to colour what a person reads: on a terminal, unless NO_COLOR is set (https://no-color.org). */
export function colourOn(env: Record<string, string | undefined>, terminal = stdoutIsTerminal()): boolean {
  return terminal && !env.NO_COLOR
}

/** Red when `colour` is on, as the dashboard shows what needs a person's attention; the text as it is otherwise. */
export function red(text: string, colour: boolean): string {
  return colour ? `\x1b[31m${text}\x1b[39m` : text
}

/** A cell's width on screen: colour codes take none. */
function visibleLength(cell: string): number {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape character is what is being matched.
  return cell.replace(/\x1b\[[0-9;]*m/g, '').length
}

/** Left-aligned columns separated by two spaces; the header is the first row. */
export function table(rows: string[][]): string {
  const widths: number[] = []
  for (const row of rows) for (const [column, cell] of row.entries()) widths[column] = Math.max(widths[column] ?? 0, visibleLength(cell))
  const pad = (cell: string, width: number) => cell + ' '.repeat(Math.max(0, width - visibleLength(cell)))
  return rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : pad(cell, widths[column] ?? 0))).join('  ')).join('\n')
}

/** "3s", "4m 5s", "2h 3m", "5d 1h": how long ago or how long for. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`
}
