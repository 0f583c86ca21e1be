import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Browser, Page } from 'playwright-core'
import { z } from 'zod'
import { configSchema } from '../../src/config/config.ts'
import { taskRequestSchema } from '../../src/wire/task.ts'
import { horizontalOverflow, launchBrowser, openPage, screenshot } from '../support/browser.ts'
import { type HttpAgent, SOURCE_CLI, startHttpAgent, startTestServer, startWsAgent, type TestServer, type WsAgent } from '../support/helpers.ts'

/** The topics the page must have, each its own top-level section, in this order (others may follow). */
const TOPICS = ['Overview', 'Key Features', 'Configuration', 'API Reference', 'WebSocket protocol', 'Client Implementation']
/** The user's complaint about version 0: consecutive sections at most this far apart at 1280 px. */
const MAX_SECTION_GAP_PX = 24

interface SectionBox {
  heading: string
  top: number
  bottom: number
}

describe('docs page', () => {
  let browser: Browser
  let server: TestServer
  let httpAgent: HttpAgent
  let wsAgent: WsAgent

  beforeAll(async () => {
    browser = await launchBrowser()
    server = startTestServer()
    httpAgent = await startHttpAgent(server.url, { nodeId: 'docs-http-1', region: 'us-east-1' })
    wsAgent = await startWsAgent(server.wsUrl, { nodeId: 'docs-ws-1', region: 'eu-west-1' })
  })

  afterAll(async () => {
    wsAgent?.close()
    httpAgent?.stop()
    await server?.stop()
    await browser?.close()
  })

  test('has one top-level section per topic, in order, at most 24 px apart at 1280 px wide', async () => {
    const { page, errors, close } = await openPage(browser, { width: 1280 })
    await page.goto(`${server.url}/`)
    const sections: SectionBox[] = await page.evaluate(() =>
      Array.from(document.querySelectorAll('section'))
        .filter((section) => !section.parentElement?.closest('section'))
        .map((section) => {
          const box = section.getBoundingClientRect()
          return { heading: section.querySelector('h2')?.textContent?.trim() ?? '', top: box.top, bottom: box.bottom }
        }),
    )
    const headings = sections.map((section) => section.heading)
    expect(headings.slice(0, TOPICS.length)).toEqual(TOPICS)
    const gaps = sections.slice(1).map((section, i) => ({ between: `${headings[i]} → ${section.heading}`, px: section.top - sections[i]!.bottom }))
    expect(gaps.length).toBeGreaterThanOrEqual(TOPICS.length - 1)
    expect(gaps.filter((gap) => gap.px > MAX_SECTION_GAP_PX || gap.px < 0)).toEqual([])
    await screenshot(page, 'docs-1280-light')
    expect(errors).toEqual([])
    await close()
  })

  test('shows the live figures from /status at the top, and follows them', async () => {
    const { page, errors, close } = await openPage(browser)
    await page.goto(`${server.url}/`)
    await page.waitForFunction(() => document.getElementById('fig-clients')?.textContent === '2', undefined, { timeout: 10_000 })
    const status = await (await fetch(`${server.url}/status`)).json()
    expect(status.clients).toBe(2)
    expect(await page.textContent('#fig-regions')).toBe(String(Object.keys(status.regions).length))
    expect(await page.textContent('#server-state')).toBe('Server online')

    // A third client registers while the page is open: the figure follows without a reload.
    const third = await startHttpAgent(server.url, { nodeId: 'docs-http-2', region: 'us-west-1' })
    try {
      await page.waitForFunction(() => document.getElementById('fig-clients')?.textContent === '3', undefined, { timeout: 15_000 })
      expect(await page.textContent('#fig-regions')).toBe('3')
    } finally {
      third.stop()
    }
    expect(errors).toEqual([])
    await close()
  })

  test('reads at 390 px wide with nothing overflowing sideways, light and dark', async () => {
    for (const colorScheme of ['light', 'dark'] as const) {
      const { page, errors, close } = await openPage(browser, { width: 390, height: 844, colorScheme })
      await page.goto(`${server.url}/`)
      await page.waitForFunction(() => document.getElementById('fig-clients')?.textContent !== '–')
      expect(await horizontalOverflow(page)).toBe(0)
      await screenshot(page, `docs-390-${colorScheme}`)
      expect(errors).toEqual([])
      await close()
    }
  })

  test('follows the system colour scheme', async () => {
    const backgrounds: string[] = []
    for (const colorScheme of ['light', 'dark'] as const) {
      const { page, errors, close } = await openPage(browser, { width: 1280, colorScheme })
      await page.goto(`${server.url}/`)
      backgrounds.push(await page.evaluate(() => getComputedStyle(document.body).backgroundColor))
      if (colorScheme === 'dark') await screenshot(page, 'docs-1280-dark')
      expect(errors).toEqual([])
      await close()
    }
    expect(backgrounds[0]).not.toBe(backgrounds[1])
  })

  test('every code block has a copy button that copies it, pointed at this server', async () => {
    const { page, context, errors, close } = await openPage(browser)
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url })
    await page.goto(`${server.url}/`)
    const blocks = await page.locator('.code pre').count()
    expect(blocks).toBeGreaterThan(10)
    expect(await page.locator('.code button.copy').count()).toBe(blocks)

    const block = page.locator('#api-task .code').first()
    const text = await block.locator('pre').textContent()
    expect(text).toContain(`${server.url}/task/request`)
    await block.locator('button.copy').click()
    await page.waitForFunction(() => document.querySelector('#api-task .code button.copy')?.textContent === 'Copied')
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(text!)
    expect(errors).toEqual([])
    await close()
  })

  test('at 390 px the contents are a menu: it lists every section, and choosing one goes there and closes it', async () => {
    const { page, errors, close } = await openPage(browser, { width: 390, height: 844 })
    await page.goto(`${server.url}/`)
    const toggle = page.locator('.toc-toggle')
    expect(await toggle.isVisible()).toBe(true)
    expect(await page.locator('.toc-links').isVisible()).toBe(false)
    expect(await toggle.getAttribute('aria-expanded')).toBe('false')
    // The bar names the section being read.
    expect(await page.textContent('#toc-current')).toBe('Overview')
    await toggle.click()
    expect(await page.locator('.toc-links').isVisible()).toBe(true)
    expect(await toggle.getAttribute('aria-expanded')).toBe('true')
    const sectionIds = await page.evaluate(() => Array.from(document.querySelectorAll('.content > section'), (section) => section.id))
    const linked = await page.evaluate(() => Array.from(document.querySelectorAll('.toc-links a'), (link) => (link as HTMLAnchorElement).hash.slice(1)))
    expect(linked).toEqual(sectionIds)
    expect(await horizontalOverflow(page)).toBe(0)
    await screenshot(page, 'docs-390-contents-open')

    await page.click('.toc-links a[href="#api"]')
    await page.waitForFunction(() => document.querySelector('.toc-toggle')?.getAttribute('aria-expanded') === 'false')
    expect(await page.locator('.toc-links').isVisible()).toBe(false)
    // The heading lands just below the top bar and the contents bar, not under them.
    const bars = await page.evaluate(() => document.querySelector('.toc')!.getBoundingClientRect().bottom)
    const top = await page.evaluate(() => document.getElementById('api')!.getBoundingClientRect().top)
    expect(top).toBeGreaterThanOrEqual(bars)
    expect(top).toBeLessThan(bars + 40)
    await page.waitForFunction(() => document.getElementById('toc-current')?.textContent === 'API Reference')
    expect(await currentEntries(page)).toEqual(['API Reference'])
    await screenshot(page, 'docs-390-after-contents')
    // Escape closes an open menu too.
    await toggle.click()
    await page.keyboard.press('Escape')
    expect(await page.locator('.toc-links').isVisible()).toBe(false)
    expect(errors).toEqual([])
    await close()
  })

  test('the contents mark the section being read: the first at the top, the one scrolled to, the last at the bottom', async () => {
    const { page, errors, close } = await openPage(browser, { width: 1280, height: 900 })
    await page.goto(`${server.url}/`)
    expect(await page.locator('.toc-toggle').isVisible()).toBe(false)
    expect(await currentEntries(page)).toEqual(['Overview'])
    const scrollTo = async (y: number | 'bottom', expected: string) => {
      await page.evaluate((to) => window.scrollTo(0, to === 'bottom' ? document.documentElement.scrollHeight : to), y)
      await page
        .waitForFunction((label) => document.querySelector('.toc-links a.current')?.textContent === label, expected, { timeout: 5000 })
        .catch(() => undefined)
      expect({ at: y, current: await currentEntries(page) }).toEqual({ at: y, current: [expected] })
    }
    const sectionTop = (id: string) => page.evaluate((which) => document.getElementById(which)!.getBoundingClientRect().top + window.scrollY, id)
    await scrollTo((await sectionTop('configuration')) - 100, 'Configuration')
    await scrollTo((await sectionTop('websocket')) - 100, 'WebSocket protocol')
    await scrollTo(0, 'Overview')
    await scrollTo('bottom', 'Coming from the original Moonlight')
    // An entry chosen in the contents is marked, even one the page cannot scroll up to the reading line.
    await page.click('.toc-links a[href="#routing"]')
    await page.waitForFunction(() => document.querySelector('.toc-links a.current')?.textContent === 'Routing, health and failover')
    expect(await currentEntries(page)).toEqual(['Routing, health and failover'])
    await page.click('.toc-links a[href="#features"]')
    await page.waitForFunction(() => document.querySelector('.toc-links a.current')?.textContent === 'Key Features')
    expect(await currentEntries(page)).toEqual(['Key Features'])
    expect(errors).toEqual([])
    await close()
  })

  test('every command on the page takes the token from $MLS_TOKEN and the page says where it comes from', async () => {
    const { page, errors, close } = await openPage(browser)
    await page.goto(`${server.url}/`)
    const blocks: string[] = await page.evaluate(() => Array.from(document.querySelectorAll('.code pre'), (pre) => pre.textContent ?? ''))
    // Only the config file itself names its tokens; every command and client example reads the environment.
    const naming = blocks.filter((block) => block.includes('supersecrettokenox0'))
    expect(naming.length).toBe(1)
    expect(naming[0]).toContain('"tokens": ["supersecrettokenox0", "supersecrettokenox1"]')
    // Every block that sends a token, or runs a command that needs one (public routes such as /status need none).
    const calls = blocks.filter(
      (block) => block !== naming[0] && /Authorization|token|client\/heartbeat|moonlight (agent|task|status|clients|cluster)\b/.test(block),
    )
    expect(calls.length).toBeGreaterThanOrEqual(8)
    for (const block of calls) {
      const fromEnvironment =
        /\$MLS_TOKEN|process\.env\.MLS_TOKEN/.test(block) || (/^moonlight /m.test(block) && !block.includes('curl') && !block.includes('--token'))
      expect({ block, fromEnvironment }).toEqual({ block, fromEnvironment: true })
    }
    for (const block of blocks.filter((text) => text.includes('Authorization'))) expect(block).toContain('Bearer $MLS_TOKEN')
    const overview = (await page.textContent('#overview')) ?? ''
    expect(overview).toContain('prints it at start-up')
    expect(overview).toContain('export MLS_TOKEN=')
    // What `moonlight serve` really prints with no token configured, so a reader recognises the line.
    expect(overview).toContain('[mls] no tokens configured: generated a token and kept it in')
    expect(errors).toEqual([])
    await close()
  })

  test('has the moonlight binary with every command its --help lists, and points migrating users to docs/migrating.md', async () => {
    const help = Bun.spawnSync([...SOURCE_CLI, '--help']).stdout.toString()
    const commands = [...help.slice(help.indexOf('Commands:')).matchAll(/^ {2}([a-z]+) {2,}/gm)].map((match) => match[1]!)
    expect(commands).toContain('serve')
    expect(commands.length).toBeGreaterThanOrEqual(9)
    const { page, errors, close } = await openPage(browser)
    await page.goto(`${server.url}/`)
    expect((await page.textContent('#cli h2'))?.trim()).toBe('The moonlight binary')
    const cli = (await page.textContent('#cli')) ?? ''
    for (const command of commands) expect({ command, documented: cli.includes(`moonlight ${command}`) }).toEqual({ command, documented: true })
    for (const variable of ['MLS_SERVER', 'MLS_TOKEN', 'MLS_CA']) expect(cli).toContain(variable)
    const original = (await page.textContent('#original')) ?? ''
    expect(original).toContain('README')
    expect(original).toContain('docs/migrating.md')
    expect(original).toContain('Coming from the original Moonlight')
    for (const fix of ['require_task_token', 'payload_format', 'node_id', 'gRPC']) expect(original).toContain(fix)
    expect(errors).toEqual([])
    await close()
  })

  test('documents every config key, endpoint and WebSocket message the server has', async () => {
    const { page, errors, close } = await openPage(browser)
    await page.goto(`${server.url}/`)
    const configuration = (await page.textContent('#configuration')) ?? ''
    for (const key of configKeys()) expect({ key, documented: configuration.includes(key) }).toEqual({ key, documented: true })

    const api = (await page.textContent('#api')) ?? ''
    for (const path of [
      '/task/request',
      '/task/{id}',
      '/task/{id}/result',
      '/openapi.json',
      '/clients/{node_id}/drain',
      '/client/heartbeat',
      '/status',
      '/clients',
      '/cluster',
      '/regions',
      '/metrics',
      '/healthz',
      '/readyz',
      '/ws',
    ]) {
      expect({ path, documented: api.includes(path) }).toEqual({ path, documented: true })
    }
    for (const status of ['400', '401', '404', '413', '415', '502', '503', '504']) expect(api).toContain(status)
    expect(api).toContain('"mode": "broadcast"')
    expect(api).toContain('"mode": "async"')
    expect(api).toContain('Idempotency-Key')
    // Every field of a task request, the routing ones included, with the codes they may answer.
    for (const field of Object.keys(taskRequestSchema.shape)) expect({ field, documented: api.includes(`"${field}"`) }).toEqual({ field, documented: true })
    for (const code of ['unknown_node', 'node_unavailable', 'X-Moonlight-Retry']) expect(api).toContain(code)

    const protocol = (await page.textContent('#websocket')) ?? ''
    for (const type of ['register', 'registered', 'heartbeat', 'heartbeat_ack', 'task', 'cancel', 'task_response', 'error', 'monitor']) {
      expect({ type, documented: protocol.includes(`"type": "${type}"`) }).toEqual({ type, documented: true })
    }
    for (const part of ['monitor_ok', 'update', 'removed', 'series', 'recent']) expect(protocol).toContain(part)
    const clients = (await page.textContent('#clients')) ?? ''
    expect(clients).toContain('/work')
    expect(clients).toContain('task_response')
    expect(errors).toEqual([])
    await close()
  })
})

/** The labels of the contents entries marked as being read. */
function currentEntries(page: Page): Promise<string[]> {
  return page.evaluate(() => Array.from(document.querySelectorAll('.toc-links a.current'), (link) => link.textContent ?? ''))
}

/** Every key of the config schema as written in mls.json: top-level names and the keys inside ws, html and health. */
function configKeys(): string[] {
  const keys: string[] = []
  for (const [name, schema] of Object.entries(configSchema.shape)) {
    keys.push(name)
    let inner: z.ZodType = schema
    while (inner instanceof z.ZodDefault || inner instanceof z.ZodPrefault || inner instanceof z.ZodOptional || inner instanceof z.ZodPipe) {
      // A transform (ws fills in a derived default) is a pipe from the object it reads.
      inner = (inner instanceof z.ZodPipe ? inner.in : inner.unwrap()) as z.ZodType
    }
    if (inner instanceof z.ZodObject) keys.push(...Object.keys(inner.shape))
  }
  return keys
}
