/** Helpers for the browser tests: Debian's Chromium through playwright-core, pages that record their errors. */
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'
import { ROOT } from './helpers.ts'

export const CHROMIUM = '/usr/bin/chromium'
/** Screenshots land here (git-ignored): look at them after a run. */
export const ARTIFACTS = join(ROOT, 'test-artifacts')

/** Launches Chromium; a missing browser fails the run with the command that installs it, never a skip. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is missing (${CHROMIUM}). Run "node scripts/ensure-chromium.mjs" (installs it as root), or: sudo apt-get install -y chromium`)
  }
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'] })
}

export interface WatchedPage {
  page: Page
  context: BrowserContext
  /** Console errors, uncaught exceptions and failed requests, in order. */
  errors: string[]
  close: () => Promise<void>
}

export interface PageOptions {
  width?: number
  height?: number
  colorScheme?: 'light' | 'dark'
}

/** A page in a fresh context (its own sessionStorage, like a new window) that records everything that goes wrong. */
export async function openPage(browser: Browser, options: PageOptions = {}): Promise<WatchedPage> {
  const context = await browser.newContext({
    viewport: { width: options.width ?? 1280, height: options.height ?? 900 },
    colorScheme: options.colorScheme ?? 'light',
  })
  const page = await context.newPage()
  const errors: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`)
  })
  page.on('pageerror', (error) => errors.push(`uncaught: ${error.message}`))
  page.on('requestfailed', (request) => errors.push(`request failed: ${request.url()} ${request.failure()?.errorText ?? ''}`))
  return { page, context, errors, close: () => context.close() }
}

/** A full-page screenshot under test-artifacts/. */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

/** How far the page can scroll sideways: 0 means nothing overflows the viewport's width. */
export function horizontalOverflow(page: Page): Promise<number> {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
}
