/**
 * What the docs point at exists: every relative link of README.md and docs/*.md reaches a file, and
 * its `#anchor` a heading of that file (GitHub's slugs); every repository path they name in code
 * (`src/…`, `test/…`, `deploy/…`, `packages/…`, `scripts/…`, `bench/…`, `public/…`, `docs/…`, `.ci/…`)
 * is there (architecture.md also writes paths from src/, `fleet/registry.ts`: architecture.test.ts checks
 * those); every MLS_* variable they name is one the code reads.
 */
import { describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize } from 'node:path'
import { PAGES, splitFences, pageText as text } from '../../support/docs.ts'
import { ROOT } from '../../support/helpers.ts'

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[`*]/g, '')
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-')
}

/** The anchors of a markdown page (its headings outside code blocks). */
function anchors(page: string): Set<string> {
  const found = new Set<string>()
  for (const line of splitFences(text(page)).prose) {
    const heading = /^#{1,6} (.+)$/.exec(line)
    if (heading) found.add(slug(heading[1]!))
  }
  return found
}

describe('the links of the docs', () => {
  test('every relative link reaches a file, and its anchor a heading there', () => {
    const broken: string[] = []
    let checked = 0
    for (const page of PAGES) {
      // Outside fenced blocks: links there are code, not links.
      for (const match of splitFences(text(page))
        .prose.join('\n')
        .matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = match[1]!
        if (/^[a-z]+:/.test(target)) continue
        checked++
        const [path, anchor] = target.split('#') as [string, string | undefined]
        const file = path === '' ? page : normalize(join(dirname(page), path))
        if (!existsSync(join(ROOT, file))) {
          broken.push(`${page}: ${target} (no ${file})`)
          continue
        }
        if (anchor !== undefined && file.endsWith('.md') && !anchors(file).has(anchor)) broken.push(`${page}: ${target} (no heading #${anchor} in ${file})`)
      }
    }
    expect(checked).toBeGreaterThan(40)
    expect(broken).toEqual([])
  })

  test('the slug rule is GitHub’s', () => {
    expect(slug('Slots, the queue, least-request and the retry budget')).toBe('slots-the-queue-least-request-and-the-retry-budget')
    expect(slug('Agents and callers in code: moonlight-sdk')).toBe('agents-and-callers-in-code-moonlight-sdk')
    expect(slug('The `moonlight` binary')).toBe('the-moonlight-binary')
  })
})

describe('the repository paths the docs name', () => {
  test('exist', () => {
    const missing: string[] = []
    let checked = 0
    for (const page of PAGES) {
      for (const span of text(page).matchAll(/`([^`\n]+)`/g)) {
        for (const match of span[1]!.matchAll(/(?<![\w./-])((?:src|test|deploy|packages|scripts|bench|public|docs|\.ci)\/[\w./-]*)/g)) {
          let path = match[1]!.replace(/[.,:]+$/, '')
          // A placeholder (test/unit/<room>/) or a pattern (`bench/results/latest.{json,md}`) names no one file.
          if (/[<{*]/.test(span[1]!.slice(match.index! + match[1]!.length, match.index! + match[1]!.length + 1))) continue
          path = path.replace(/\/$/, '')
          checked++
          if (!existsSync(join(ROOT, path))) missing.push(`${page}: ${path}`)
        }
      }
    }
    expect(checked).toBeGreaterThan(40)
    expect(missing).toEqual([])
  })
})

describe('the MLS_* variables the docs name', () => {
  /** Variables the original Moonlight's clients read (docs/migrating.md tells their users to set them). */
  const ORIGINAL_CLIENTS = new Set(['MLS_CLIENT_IP', 'MLS_NODE_ID'])

  function sources(dir: string): string[] {
    return readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })
      .filter((path) => path.endsWith('.ts'))
      .map((path) => readFileSync(join(ROOT, dir, path), 'utf8'))
  }

  test('are read by the code (or, for the original clients, named as theirs)', () => {
    const code = [...sources('src'), ...sources('packages/sdk/src')].join('\n')
    const named = new Map<string, string>()
    for (const page of PAGES) for (const match of text(page).matchAll(/\bMLS_[A-Z_]*[A-Z]\b/g)) named.set(match[0], page)
    expect(named.size).toBeGreaterThan(6)
    const unread = [...named].filter(([name]) => !ORIGINAL_CLIENTS.has(name) && !code.includes(name)).map(([name, page]) => `${page}: ${name}`)
    expect(unread).toEqual([])
    expect(text('docs/migrating.md')).toContain('MLS_CLIENT_IP')
  })
})
