import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Browser } from 'playwright-core'
import { launchBrowser, openPage } from '../support/browser.ts'
import { startTestServer, TOKEN } from '../support/helpers.ts'

const CONTENT_TYPES: Record<string, string> = {
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  svg: 'image/svg+xml',
}

describe('pages as the html config says', () => {
  let browser: Browser

  beforeAll(async () => {
    browser = await launchBrowser()
  })

  afterAll(async () => {
    await browser?.close()
  })

  test('serves both pages and every file they load, with content types and a short cache', async () => {
    const server = startTestServer()
    try {
      const assets = new Set<string>()
      for (const path of ['/', '/dashboard']) {
        const response = await fetch(`${server.url}${path}`)
        expect(response.status).toBe(200)
        expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8')
        expect(response.headers.get('cache-control')).toBe('no-cache')
        const html = await response.text()
        expect(html).not.toContain('{{')
        for (const [, asset] of html.matchAll(/(?:href|src)="(\/static\/[^"]+)"/g)) assets.add(asset!)
      }
      // Scripts import their neighbours: follow the imports so every module the pages run is checked.
      for (const asset of assets) {
        const response = await fetch(`${server.url}${asset}`)
        const extension = asset.slice(asset.lastIndexOf('.') + 1)
        expect({ asset, status: response.status, type: response.headers.get('content-type'), cache: response.headers.get('cache-control') }).toEqual({
          asset,
          status: 200,
          type: CONTENT_TYPES[extension]!,
          cache: 'public, max-age=60',
        })
        const text = await response.text()
        if (extension === 'js') for (const [, name] of text.matchAll(/from '\.\/([\w-]+\.js)'/g)) assets.add(`/static/${name}`)
      }
      expect(assets.size).toBeGreaterThanOrEqual(12)
    } finally {
      await server.stop()
    }
  })

  test('serves nothing else from the static path', async () => {
    const server = startTestServer()
    try {
      for (const path of ['/static/nope.js', '/static/%2e%2e%2fpackage.json', '/static/embedded-files.d.ts', '/static/index.html']) {
        const response = await fetch(`${server.url}${path}`)
        expect({ path, status: response.status }).toEqual({ path, status: 404 })
        expect((await response.json()).code).toBe('not_found')
      }
    } finally {
      await server.stop()
    }
  })

  test('mounts nothing when html.enabled is false; the API stays', async () => {
    const server = startTestServer({ html: { enabled: false } })
    try {
      for (const path of ['/', '/dashboard', '/static/base.css']) {
        expect({ path, status: (await fetch(`${server.url}${path}`)).status }).toEqual({ path, status: 404 })
      }
      expect((await fetch(`${server.url}/status`)).status).toBe(200)
    } finally {
      await server.stop()
    }
  })

  test('moves the pages and their assets to the configured paths, and they still work', async () => {
    const server = startTestServer({ html: { index_path: '/docs', dashboard_path: '/live', static_path: '/assets' } })
    const { page, errors, close } = await openPage(browser)
    try {
      for (const [path, status] of [
        ['/', 404],
        ['/dashboard', 404],
        ['/static/base.css', 404],
        ['/docs', 200],
        ['/live', 200],
        ['/assets/base.css', 200],
      ] as const) {
        expect({ path, status: (await fetch(`${server.url}${path}`)).status }).toEqual({ path, status })
      }
      await page.goto(`${server.url}/live`)
      expect(await page.getAttribute('.nav a[href="/docs"]', 'href')).toBe('/docs')
      await page.fill('#token', TOKEN)
      await page.press('#token', 'Enter')
      await page.waitForSelector('#board', { state: 'visible', timeout: 10_000 })
      // The stylesheet came from /assets: the top bar is laid out by it.
      expect(await page.evaluate(() => getComputedStyle(document.querySelector('.topbar')!).position)).toBe('sticky')
      await page.click('.nav a[href="/docs"]')
      await page.waitForSelector('#overview')
      expect(new URL(page.url()).pathname).toBe('/docs')
      expect(errors).toEqual([])
    } finally {
      await close()
      await server.stop()
    }
  })

  test('the dashboard says live monitoring is off when ws.enabled is false', async () => {
    const server = startTestServer({ ws: { enabled: false } })
    const { page, errors, close } = await openPage(browser)
    try {
      await page.goto(`${server.url}/dashboard`)
      expect(await page.textContent('#login-message')).toContain('ws.enabled is false')
      expect(await page.isDisabled('#token')).toBe(true)
      expect(errors).toEqual([])
    } finally {
      await close()
      await server.stop()
    }
  })
})
