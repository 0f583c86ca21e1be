/**
 * A hostile pass on what the dashboard and the docs page show: everything an agent or a caller
 * controls (node ids and regions at their 128-character limit, 5xx bodies and task_responses holding
 * markup, bidi overrides and zero-width characters, a thousand clients) reaches a real Chromium as
 * text, runs no script and stays inside its card at 1280 and 390 px.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Browser, Page } from 'playwright-core'
import { launchBrowser, openPage, type WatchedPage } from '../support/browser.ts'
import { type HttpAgent, postJson, postTask, startHttpAgent, startTestServer, startWsAgent, type TestServer, TOKEN, type WsAgent } from '../support/helpers.ts'

const LIVE_MS = 10_000
/** Names may be 128 characters of letters, digits and . _ : @ - : the longest unbroken words the page can be given. */
const LONG_NODE = `n${'W'.repeat(126)}1`
const LONG_REGION = `r${'M'.repeat(126)}9`
const LONG_WS_NODE = `w${'W'.repeat(126)}2`
/** Every payload sets a flag on window if it ever runs: the test asserts none is set. */
const MARKUP_BODY =
  '<img src=x onerror="window.__pwned=1"></script><script>window.__pwned=2</script><svg onload="window.__pwned=3"></svg>' +
  '<a href="javascript:window.__pwned=4">x</a>\u202Egnp.exe\u202C zero\u200Bwidth\u200D\uFEFF'
const WS_MARKUP = '<img src=x onerror="window.__pwned=5"><iframe srcdoc="<script>parent.__pwned=6</script>"></iframe>'
const MANY = 1000

describe('dashboard under hostile input', () => {
  let browser: Browser
  let server: TestServer
  const httpAgents: HttpAgent[] = []
  const wsAgents: WsAgent[] = []

  beforeAll(async () => {
    browser = await launchBrowser()
    // Ejection would take the hostile agents out of rotation before the page asks them anything.
    server = startTestServer({ health: { failures_to_eject: 1_000_000 }, retry_count: 0 } as never)
    httpAgents.push(
      await startHttpAgent(server.url, {
        nodeId: LONG_NODE,
        region: LONG_REGION,
        work: () => new Response(`${MARKUP_BODY}${'x'.repeat(200_000)}`, { status: 500, headers: { 'content-type': 'text/html' } }),
      }),
    )
    wsAgents.push(
      await startWsAgent(server.wsUrl, {
        nodeId: LONG_WS_NODE,
        region: 'eu-west-1',
        answer: () => ({ status: 500, headers: { 'content-type': 'text/html', 'x-note': WS_MARKUP }, response: WS_MARKUP }),
      }),
    )
    // A thousand clients by heartbeat: no agent listens behind them, and no task is sent their way.
    for (let start = 0; start < MANY; start += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          postJson(`${server.url}/client/heartbeat`, {
            node_id: `fleet-${String(start + i).padStart(4, '0')}-${'k'.repeat(100)}`,
            token: TOKEN,
            region: `ap-southeast-1`,
            port: 1 + start + i,
          }),
        ),
      )
    }
    for (let i = 0; i < 3; i++) await postTask(server.url, { region: LONG_REGION, payload: { i } })
    for (let i = 0; i < 3; i++) await postTask(server.url, { region: 'eu-west-1', payload: { i } })
  })

  afterAll(async () => {
    for (const agent of httpAgents) agent.stop()
    for (const agent of wsAgents) agent.close()
    await server?.stop()
    await browser?.close()
  })

  async function signedIn(width: number): Promise<WatchedPage & { dialogs: string[] }> {
    const watched = await openPage(browser, { width })
    const dialogs: string[] = []
    watched.page.on('dialog', (dialog) => {
      dialogs.push(dialog.message())
      void dialog.dismiss()
    })
    await watched.page.goto(`${server.url}/dashboard`)
    await watched.page.fill('#token', TOKEN)
    await watched.page.click('#login-submit')
    await watched.page.waitForSelector('#board', { state: 'visible', timeout: LIVE_MS })
    await watched.page.waitForFunction((count) => document.querySelectorAll('#clients tbody tr').length === count, MANY + 2, { timeout: LIVE_MS })
    return { ...watched, dialogs }
  }

  async function openDetail(page: Page, nodeId: string): Promise<void> {
    await page.click(`tr[data-node="${nodeId}"]`)
    await page.waitForFunction((id) => document.querySelector('#detail-title')?.textContent === id, nodeId, { timeout: LIVE_MS })
    await page.waitForSelector('#client-detail .detail-tasks > li', { timeout: LIVE_MS })
  }

  async function sendTestTask(page: Page, region: string): Promise<{ status: string | null; body: string }> {
    await page.evaluate(() => document.querySelector('#test-result')?.replaceChildren())
    await page.fill('#test-region', region)
    await page.click('#test-send')
    await page.waitForSelector('#test-result [data-field="body"]', { timeout: LIVE_MS })
    return { status: await page.textContent('#test-result [data-field="status"]'), body: (await page.textContent('#test-result [data-field="body"]')) ?? '' }
  }

  test("markup in an HTTP agent's 5xx body and a WebSocket agent's task_response is shown as text and runs nothing", async () => {
    const { page, errors, dialogs, close } = await signedIn(1280)
    const http = await sendTestTask(page, LONG_REGION)
    expect(http.status).toBe('502 Bad Gateway')
    const httpError = JSON.parse(http.body)
    // The excerpt, to the character: the markup, the bidi override and the zero-width characters as the agent sent them.
    expect(httpError.attempts[0].body.startsWith(MARKUP_BODY)).toBe(true)
    const ws = await sendTestTask(page, 'eu-west-1')
    expect(ws.status).toBe('502 Bad Gateway')
    expect(JSON.parse(ws.body).attempts[0].body).toContain(WS_MARKUP)
    await openDetail(page, LONG_NODE)
    expect(await page.textContent('#client-detail .attempts li')).toMatch(new RegExp(`^#1 ${LONG_NODE} · failed: answered 500 · `))
    await openDetail(page, LONG_WS_NODE)
    expect(await page.textContent('#client-detail .attempts li')).toMatch(new RegExp(`^#1 ${LONG_WS_NODE} · failed: answered 500 · `))
    expect(await noScriptRan(page)).toEqual({ flag: undefined, injected: 0 })
    expect(dialogs).toEqual([])
    // Chromium logs every 5xx a fetch gets; the two test tasks' 502s are the only errors.
    expect(errors).toEqual(Array(2).fill('console: Failed to load resource: the server responded with a status of 502 (Bad Gateway)'))
    await close()
  })

  for (const width of [1280, 390]) {
    test(`at ${width} px a region name of 128 characters stays inside the Regions card`, async () => {
      const { page, errors, close } = await signedIn(width)
      await page.locator(`#regions li[data-region="${LONG_REGION}"]`).waitFor({ timeout: LIVE_MS })
      expect(await overflowing(page, '#regions')).toEqual([])
      // The count beside it is still on screen, beside its own region.
      expect(await page.isVisible(`#regions li[data-region="${LONG_REGION}"] .count`)).toBe(true)
      expect(errors).toEqual([])
      await close()
    })

    test(`at ${width} px a client's detail with a node id and region of 128 characters stays inside its card`, async () => {
      const { page, errors, close } = await signedIn(width)
      await openDetail(page, LONG_NODE)
      expect(await overflowing(page, '#client-detail')).toEqual([])
      expect(errors).toEqual([])
      await close()
    })

    test(`at ${width} px with ${MANY} clients, a long answer and a detail open, nothing on the page reaches past its card`, async () => {
      const { page, close } = await signedIn(width)
      await sendTestTask(page, LONG_REGION)
      await openDetail(page, LONG_NODE)
      expect(await overflowing(page)).toEqual([])
      await close()
    })
  }
})

describe('dashboard and docs page: headers, and the token kept out of URLs', () => {
  let browser: Browser
  let server: TestServer

  beforeAll(async () => {
    browser = await launchBrowser()
    server = startTestServer()
  })

  afterAll(async () => {
    await server?.stop()
    await browser?.close()
  })

  test('both pages and their scripts forbid inline script and sniffing, and send no Referer', async () => {
    for (const path of ['/', '/dashboard', '/static/dashboard.js', '/static/docs.js']) {
      const headers = (await fetch(`${server.url}${path}`)).headers
      const policy = headers.get('content-security-policy') ?? ''
      expect({ path, nosniff: headers.get('x-content-type-options'), referrer: headers.get('referrer-policy') }).toEqual({
        path,
        nosniff: 'nosniff',
        referrer: 'no-referrer',
      })
      // Scripts come from this origin only (default-src, no script-src of its own): no inline script, no eval, no other host.
      expect({ path, self: policy.includes("default-src 'self'"), formAction: policy.includes("form-action 'none'") }).toEqual({
        path,
        self: true,
        formAction: true,
      })
      expect({ path, loosened: /unsafe-inline|unsafe-eval|\*|https?:|script-src/.exec(policy)?.[0] }).toEqual({ path, loosened: undefined })
    }
  })

  test('signing in, opening a detail and sending a test task put the token in no URL the page loads', async () => {
    const agent = await startWsAgent(server.wsUrl, { nodeId: 'url-watch', region: 'eu-west-1' })
    const { page, close } = await openPage(browser)
    const urls: string[] = []
    page.on('request', (request) => urls.push(request.url()))
    page.on('websocket', (socket) => urls.push(socket.url()))
    await page.goto(`${server.url}/dashboard`)
    await page.fill('#token', TOKEN)
    await page.press('#token', 'Enter')
    await page.locator('tr[data-node="url-watch"]').waitFor({ timeout: LIVE_MS })
    await page.click('tr[data-node="url-watch"]')
    await page.waitForFunction(() => document.querySelector('#detail-tasks')?.childElementCount, undefined, { timeout: LIVE_MS })
    await page.fill('#test-region', 'eu-west-1')
    await page.click('#test-send')
    await page.waitForSelector('#test-result [data-field="status"]', { timeout: LIVE_MS })
    expect(urls.some((url) => url.endsWith('/clients/url-watch'))).toBe(true)
    expect(urls.some((url) => url.startsWith('ws://'))).toBe(true)
    expect(urls.filter((url) => url.includes(TOKEN))).toEqual([])
    expect(page.url()).toBe(`${server.url}/dashboard`)
    agent.close()
    await close()
  })

  test('with its script not loaded, submitting the sign-in form does not put the token in the address', async () => {
    const { page, close } = await openPage(browser)
    // Without its script the form would submit itself (GET /dashboard): the page's form-action 'none' blocks that first.
    await page.route('**/static/dashboard.js', (route) => route.abort())
    const urls: string[] = []
    page.on('request', (request) => urls.push(request.url()))
    page.on('framenavigated', (frame) => urls.push(frame.url()))
    await page.goto(`${server.url}/dashboard`)
    await page.fill('#token', TOKEN)
    // Wait for the blocked submission to be reported, not for a time: Chromium logs the CSP refusal.
    const refused = page.waitForEvent('console', { predicate: (message) => message.text().includes('form-action'), timeout: LIVE_MS })
    await page.click('#login-submit', { noWaitAfter: true })
    expect((await refused).text()).toContain('The request has been blocked.')
    expect(page.url()).toBe(`${server.url}/dashboard`)
    expect(urls.filter((url) => url.includes(TOKEN))).toEqual([])
    await close()
  })

  test('with its script not loaded and no Content-Security-Policy (a proxy dropped it), a submitted sign-in form carries no token', async () => {
    // The token field has no name, so a plain form submission has nothing of it to send, whatever the headers.
    const context = await browser.newContext({ bypassCSP: true })
    const page = await context.newPage()
    await page.route('**/static/dashboard.js', (route) => route.abort())
    const urls: string[] = []
    page.on('request', (request) => urls.push(request.url()))
    await page.goto(`${server.url}/dashboard`)
    await page.fill('#token', TOKEN)
    const submitted = page.waitForEvent('framenavigated', { timeout: LIVE_MS })
    await page.click('#login-submit', { noWaitAfter: true })
    await submitted
    expect(urls.length).toBeGreaterThan(1)
    expect(urls.filter((url) => url.includes(TOKEN))).toEqual([])
    await context.close()
  })
})

async function noScriptRan(page: Page): Promise<{ flag: unknown; injected: number }> {
  return page.evaluate(() => ({
    flag: (window as unknown as { __pwned?: unknown }).__pwned,
    injected: document.querySelectorAll('img[src="x"], svg[onload], iframe, script:not([src]), a[href^="javascript:"]').length,
  }))
}

/**
 * Elements whose box reaches past the card that holds them, and the page scrolling sideways. A
 * box inside a scroller of its own (a table's wrapper, a <pre>) is the scroller's business: it is
 * checked only that the scroller itself stays inside.
 */
async function overflowing(page: Page, inside?: string): Promise<string[]> {
  return page.evaluate((within) => {
    const found: string[] = []
    const doc = document.documentElement
    if (!within && doc.scrollWidth > doc.clientWidth) found.push(`page scrolls sideways by ${doc.scrollWidth - doc.clientWidth} px`)
    const cards: HTMLElement[] = within
      ? [document.querySelector(within)!.closest('.card') as HTMLElement]
      : Array.from(document.querySelectorAll<HTMLElement>('.card'))
    for (const card of cards) {
      if (card.offsetParent === null) continue
      const box = card.getBoundingClientRect()
      for (const element of Array.from(card.querySelectorAll<HTMLElement>('*'))) {
        if (element.offsetParent === null && getComputedStyle(element).position !== 'fixed') continue
        let clipped = false
        for (let up = element.parentElement; up && up !== card; up = up.parentElement) {
          if (getComputedStyle(up).overflowX !== 'visible') clipped = true
        }
        if (clipped) continue
        const rect = element.getBoundingClientRect()
        if (rect.width === 0) continue
        const id = card.id || card.querySelector('h1, h2')?.textContent?.trim()
        const what = `${element.tagName.toLowerCase()}${element.id ? `#${element.id}` : ''}.${element.className}`
        if (rect.right > box.right + 0.5 || rect.left < box.left - 0.5) {
          found.push(`${what} in card "${id}" reaches ${Math.round(rect.right - box.right)} px past it`)
        }
        // Text wider than its own box spills out of it without moving the box: a long word in a block.
        const own = getComputedStyle(element).overflowX === 'visible' && element.clientWidth > 0
        if (own && element.scrollWidth > element.clientWidth + 1)
          found.push(`${what} in card "${id}": its text is ${element.scrollWidth - element.clientWidth} px wider than it`)
      }
    }
    return [...new Set(found)].slice(0, 20)
  }, inside)
}
