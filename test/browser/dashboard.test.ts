import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Browser, Page } from 'playwright-core'
import { parseConfig } from '../../src/config/config.ts'
import { type MoonlightServer, startServer } from '../../src/server/server.ts'
import { horizontalOverflow, launchBrowser, openPage, screenshot, type WatchedPage } from '../support/browser.ts'
import { openWs, postTask, SEED_CONFIG, startHttpAgent, startTestServer, startWsAgent, type TestServer, TOKEN } from '../support/helpers.ts'

const TOKEN_KEY = 'moonlight.token'
/** Long enough for a 500 ms batch to reach the page on a loaded machine; the feed itself is not timed here. */
const LIVE_MS = 10_000

describe('dashboard', () => {
  let browser: Browser
  let server: TestServer

  beforeAll(async () => {
    browser = await launchBrowser()
    // One failure ejects a client, so the ejection test needs a single bad answer.
    server = startTestServer({ health: { failures_to_eject: 1 } })
  })

  afterAll(async () => {
    await server?.stop()
    await browser?.close()
  })

  async function signedIn(options: Parameters<typeof openPage>[1] = {}, url = server.url): Promise<WatchedPage> {
    const watched = await openPage(browser, options)
    await watched.page.goto(`${url}/dashboard`)
    await signIn(watched.page)
    return watched
  }

  test('asks for the token in a password field, signs in on Enter and keeps the token for this tab only', async () => {
    const { page, context, errors, close } = await openPage(browser)
    await page.goto(`${server.url}/dashboard`)
    expect(await page.getAttribute('#token', 'type')).toBe('password')
    expect(await page.isVisible('#board')).toBe(false)
    await screenshot(page, 'dashboard-login-light')

    await signIn(page)
    expect(await page.textContent('#connection')).toBe('live')
    expect(await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY)).toBe(TOKEN)
    expect(await page.evaluate(() => localStorage.length)).toBe(0)

    // A reload in the same tab stays signed in; another tab starts signed out.
    await page.reload()
    await page.waitForSelector('#board', { state: 'visible', timeout: LIVE_MS })
    expect(await page.isVisible('#login')).toBe(false)
    const otherTab = await context.newPage()
    await otherTab.goto(`${server.url}/dashboard`)
    expect(await otherTab.isVisible('#login')).toBe(true)
    expect(await otherTab.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY)).toBeNull()

    await page.click('#sign-out')
    await page.waitForSelector('#login', { state: 'visible' })
    expect(await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY)).toBeNull()
    expect(errors).toEqual([])
    await close()
  })

  test('refuses a wrong token with a clear message and forgets it', async () => {
    const { page, errors, close } = await openPage(browser)
    await page.goto(`${server.url}/dashboard`)
    await page.fill('#token', 'not-the-right-token')
    await page.press('#token', 'Enter')
    await page.waitForSelector('#login-message', { state: 'visible', timeout: LIVE_MS })
    expect(await page.textContent('#login-message')).toBe('The server refused this token (invalid token). Check it and try again.')
    expect(await page.isVisible('#board')).toBe(false)
    expect(await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY)).toBeNull()
    await screenshot(page, 'dashboard-refused-light')
    expect(errors).toEqual([])
    await close()
  })

  test('shows a client that joins within moments, and one that leaves as gone, without reloading', async () => {
    const { page, errors, close } = await signedIn()
    await page.evaluate(() => Object.assign(window, { sameDocument: true }))

    const wsAgent = await startWsAgent(server.wsUrl, { nodeId: 'live-ws-1', region: 'eu-west-1', weight: 3 })
    const wsRow = page.locator('tr[data-node="live-ws-1"]')
    await wsRow.waitFor({ timeout: LIVE_MS })
    expect(await cells(wsRow, ['region', 'protocol', 'weight', 'state', 'in_flight'])).toEqual({
      region: 'eu-west-1',
      protocol: 'WS',
      weight: '3',
      state: 'healthy',
      in_flight: '0',
    })
    await waitForText(page, '[data-region="eu-west-1"] > .node .count', '1 / 1')
    // A WebSocket client at its source address, with no port (it has none of its own to show).
    expect(await wsRow.locator('.address').textContent()).toBe('127.0.0.1')

    const httpAgent = await startHttpAgent(server.url, { nodeId: 'live-http-1', region: 'us-east-1' })
    try {
      const httpRow = page.locator('tr[data-node="live-http-1"]')
      await httpRow.waitFor({ timeout: LIVE_MS })
      expect(await cells(httpRow, ['region', 'protocol', 'state'])).toEqual({ region: 'us-east-1', protocol: 'HTTP', state: 'healthy' })
      expect(await httpRow.locator('.address').textContent()).toMatch(/^127\.0\.0\.1:\d+$/)

      wsAgent.close()
      await page.waitForSelector('tr[data-node="live-ws-1"].gone', { timeout: LIVE_MS })
      expect(await wsRow.locator('[data-field="state"]').textContent()).toStartWith('left')
      await waitForText(page, '[data-region="eu-west-1"] > .node .count', '0 / 0')
      expect(await page.evaluate(() => 'sameDocument' in window)).toBe(true)
    } finally {
      httpAgent.stop()
    }
    expect(errors).toEqual([])
    await close()
  })

  test('shows the effective weight of a client while it ramps up (slow start), then its weight alone', async () => {
    // 6 s: the page's first reading, a moment after the join, still falls in the ramp's first steps on a loaded machine.
    const ramping = startTestServer({ health: { slow_start: 6 } })
    const { page, errors, close } = await signedIn({}, ramping.url)
    const agent = await startWsAgent(ramping.wsUrl, { nodeId: 'cold-1', region: 'eu-west-1', weight: 10 })
    try {
      const weight = page.locator('tr[data-node="cold-1"] [data-field="weight"]')
      await weight.waitFor({ timeout: LIVE_MS })
      expect(await weight.textContent()).toMatch(/^10 now (1|1\.5|2|2\.5)$/)
      await page.waitForFunction(() => document.querySelector('tr[data-node="cold-1"] [data-field="weight"]')?.textContent === '10', undefined, {
        timeout: 6000 + LIVE_MS,
      })
      expect(errors).toEqual([])
    } finally {
      agent.close()
      await close()
      await ramping.stop()
    }
  })

  test("shows a node_id conflict on the holder's row: where the other agent is, and how often it was refused", async () => {
    const { page, errors, close } = await signedIn()
    const holder = await startWsAgent(server.wsUrl, { nodeId: 'cloned-1', region: 'eu-west-1' })
    const twin = await openWs(server.wsUrl)
    try {
      twin.send({ type: 'register', payload: { node_id: 'cloned-1', token: TOKEN, region: 'eu-west-1' } })
      expect((await twin.next('error', 5000)).payload.code).toBe('node_id_in_use')
      const note = page.locator('tr[data-node="cloned-1"] .conflict')
      await note.waitFor({ timeout: LIVE_MS })
      expect(await note.textContent()).toBe('node_id conflict: 127.0.0.1 · 1×')
      expect(await note.getAttribute('title')).toContain('give each agent its own node id')
      expect(errors).toEqual([])
    } finally {
      twin.close()
      holder.close()
      await close()
    }
  })

  test('shows a client ejected after failing as ejected', async () => {
    const { page, errors, close } = await signedIn()
    const good = await startHttpAgent(server.url, { nodeId: 'steady-1', region: 'ap-southeast-1' })
    const bad = await startHttpAgent(server.url, { nodeId: 'broken-1', region: 'ap-southeast-1', work: () => new Response('boom', { status: 500 }) })
    try {
      // Round-robin reaches the broken client within two tasks; its 500 ejects it and the task fails over.
      for (let i = 0; i < 4 && bad.received.length === 0; i++) {
        expect((await postTask(server.url, { region: 'ap-southeast-1', payload: { i } })).status).toBe(200)
      }
      expect(bad.received.length).toBe(1)
      await waitForText(page, 'tr[data-node="broken-1"] [data-field="state"] .badge', 'ejected')
      expect(await page.textContent('tr[data-node="steady-1"] [data-field="state"]')).toBe('healthy')
      await waitForText(page, '[data-region="ap-southeast-1"] > .node .count', '1 / 2')
    } finally {
      good.stop()
      bad.stop()
    }
    expect(errors).toEqual([])
    await close()
  })

  test('shows a lone client that fails every task as failing, in red, and its region in red', async () => {
    const { page, errors, close } = await signedIn()
    // Alone in its region: the ejection cap keeps it in service, failing.
    const lone = await startHttpAgent(server.url, { nodeId: 'lonely-1', region: 'eu-north-1', work: () => new Response('boom', { status: 500 }) })
    try {
      expect((await postTask(server.url, { region: 'eu-north-1', payload: {} })).status).toBe(502)
      const badge = 'tr[data-node="lonely-1"] [data-field="state"] .badge'
      await waitForText(page, badge, 'failing')
      expect(await page.getAttribute(badge, 'title')).toContain('kept in service only because ejecting it would leave its pool')
      const red = await page.evaluate(() => {
        const probe = document.body.appendChild(document.createElement('span'))
        probe.style.color = 'var(--bad)'
        const color = getComputedStyle(probe).color
        probe.remove()
        return color
      })
      expect(await page.$eval(badge, (element) => getComputedStyle(element).color)).toBe(red)
      expect(await page.$eval('[data-region="eu-north-1"] > .node .count', (element) => getComputedStyle(element).color)).toBe(red)
    } finally {
      lone.stop()
    }
    expect(errors).toEqual([])
    await close()
  })

  test('sends a test task from the page and shows the answer', async () => {
    const agent = await startHttpAgent(server.url, { nodeId: 'answer-1', region: 'us-west-1' })
    const { page, errors, close } = await signedIn()
    try {
      await page.fill('#test-region', 'us-west-1')
      await page.fill('#test-payload', '{oops')
      await page.click('#test-send')
      await waitForText(page, '#test-note', 'The payload is not valid JSON: ', { startsWith: true })
      expect(agent.received).toEqual([])

      await page.fill('#test-payload', '{ "hello": "from the dashboard" }')
      await page.click('#test-send')
      await page.waitForSelector('#test-result [data-field="status"]', { timeout: LIVE_MS })
      expect(await page.textContent('#test-result [data-field="status"]')).toBe('200 OK')
      expect(await page.textContent('#test-result [data-field="node"]')).toBe('answered by answer-1')
      expect(JSON.parse((await page.textContent('#test-result [data-field="body"]')) ?? '')).toEqual({
        node: 'answer-1',
        echo: { hello: 'from the dashboard' },
      })
      expect(agent.received).toEqual([{ hello: 'from the dashboard' }])

      // The same task arrives in the recent tasks over the live feed.
      await page.waitForFunction(
        () =>
          Array.from(document.querySelectorAll('#tasks tbody tr')).some(
            (row) => row.textContent?.includes('answer-1') && row.textContent.includes('us-west-1'),
          ),
        undefined,
        { timeout: LIVE_MS },
      )
    } finally {
      agent.stop()
    }
    expect(errors).toEqual([])
    await close()
  })

  test('looks right light and dark, and fits 390 px wide', async () => {
    // A server of its own, so the screenshots show this fleet only.
    const shown = startTestServer()
    const agents = [
      await startHttpAgent(shown.url, { nodeId: 'node-001', region: 'us-east-1', weight: 2 }),
      await startHttpAgent(shown.url, { nodeId: 'node-003', region: 'eu-west-1' }),
    ]
    const wsAgent = await startWsAgent(shown.wsUrl, { nodeId: 'node-002', region: 'us-west' })
    try {
      const pages = await Promise.all([
        signedIn({ colorScheme: 'light' }, shown.url),
        signedIn({ colorScheme: 'dark' }, shown.url),
        signedIn({ width: 390, height: 844 }, shown.url),
      ])
      // A few seconds of traffic for the chart, with one task that finds no client (an error bar).
      for (let i = 0; i < 16; i++) {
        await postTask(shown.url, { region: i % 3 ? 'global' : 'usa', payload: { i } })
        if (i === 9) expect((await postTask(shown.url, { region: 'asia', payload: {}, mode: 'broadcast' })).status).toBe(503)
        await Bun.sleep(150)
      }
      for (const { page } of pages) await waitForText(page, '#tile-total', '17')
      const [light, dark, narrow] = pages as [WatchedPage, WatchedPage, WatchedPage]
      expect(await horizontalOverflow(narrow.page)).toBe(0)
      const backgrounds = await Promise.all([light, dark].map(({ page }) => page.evaluate(() => getComputedStyle(document.body).backgroundColor)))
      expect(backgrounds[0]).not.toBe(backgrounds[1])
      await screenshot(light.page, 'dashboard-1280-light')
      await screenshot(dark.page, 'dashboard-1280-dark')
      await screenshot(narrow.page, 'dashboard-390-light')
      for (const watched of pages) {
        expect(watched.errors).toEqual([])
        await watched.close()
      }
    } finally {
      for (const agent of agents) agent.stop()
      wsAgent.close()
      await shown.stop()
    }
  })

  test('says so when the server goes down, and reconnects by itself when it is back', async () => {
    const start = (port: number): MoonlightServer => startServer({ loaded: parseConfig(SEED_CONFIG, 'test'), port, host: '127.0.0.1', log: () => {} })
    let own = start(0)
    const port = own.port
    const { page, errors, close } = await openPage(browser)
    try {
      await page.goto(`${own.url}/dashboard`)
      await signIn(page)
      const before = await startHttpAgent(own.url, { nodeId: 'before-restart', region: 'us-east-1' })
      await page.locator('tr[data-node="before-restart"]').waitFor({ timeout: LIVE_MS })
      before.stop()

      await own.stop(0)
      await page.waitForSelector('#banner', { state: 'visible', timeout: LIVE_MS })
      expect(await page.textContent('#banner')).toContain('Reconnecting by itself')
      expect(await page.textContent('#connection')).toBe('server unreachable')
      await screenshot(page, 'dashboard-reconnecting-light')

      own = start(port)
      const after = await startWsAgent(`ws://127.0.0.1:${port}/ws`, { nodeId: 'after-restart', region: 'eu-west-1' })
      await page.waitForSelector('#banner', { state: 'hidden', timeout: 30_000 })
      await page.locator('tr[data-node="after-restart"]').waitFor({ timeout: LIVE_MS })
      expect(await page.textContent('#connection')).toBe('live')
      // The snapshot after reconnecting is the truth: the client from before the restart is shown as gone.
      expect(await page.getAttribute('tr[data-node="before-restart"]', 'class')).toContain('gone')
      expect(await page.textContent('tr[data-node="before-restart"] [data-field="state"]')).toBe('left no longer registered')
      after.close()
    } finally {
      await own.stop(0)
    }
    // While the server was down, Chromium logs each refused reconnection attempt; nothing else may appear.
    expect(errors.filter((error) => !/WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed/.test(error))).toEqual([])
    await close()
  })
})

async function signIn(page: Page, token = TOKEN): Promise<void> {
  await page.fill('#token', token)
  await page.press('#token', 'Enter')
  await page.waitForSelector('#board', { state: 'visible', timeout: LIVE_MS })
}

/** Waits until the element's text is `text` (or, with `startsWith`, begins with it). */
async function waitForText(page: Page, selector: string, text: string, how: { startsWith?: boolean } = {}): Promise<void> {
  await page.waitForFunction(
    ({ selector, text, how }) => {
      const actual = document.querySelector(selector)?.textContent?.trim()
      if (actual === undefined) return false
      return how.startsWith ? actual.startsWith(text) : actual === text
    },
    { selector, text, how },
    { timeout: LIVE_MS },
  )
}

async function cells(row: ReturnType<Page['locator']>, fields: string[]): Promise<Record<string, string>> {
  const found: Record<string, string> = {}
  for (const field of fields) found[field] = ((await row.locator(`[data-field="${field}"]`).textContent()) ?? '').trim()
  return found
}
