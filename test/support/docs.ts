/** The documentation pages as the doc tests read them: which pages, their text, their code and prose apart. */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from './helpers.ts'

/** README.md and every page of docs/, as paths from the repository's root. */
export const PAGES: readonly string[] = ['README.md', ...readdirSync(join(ROOT, 'docs')).map((name) => `docs/${name}`)]

/** A page's text (`page` as PAGES names it). */
export const pageText = (page: string): string => readFileSync(join(ROOT, page), 'utf8')

/**
 * A markdown text's lines apart: `prose`, the lines outside fenced blocks, and `code`, the lines inside
 * them; the fence lines (```` ```sh ````, indented in a list too) are in neither.
 */
export function splitFences(markdown: string): { prose: string[]; code: string[] } {
  const prose: string[] = []
  const code: string[] = []
  let fenced = false
  for (const line of markdown.split('\n')) {
    if (/^\s*```/.test(line)) fenced = !fenced
    else (fenced ? code : prose).push(line)
  }
  return { prose, code }
}
