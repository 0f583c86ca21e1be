/** The dashboard's operator side: a client's detail and actions, filter and sort, p50/p95/p99, and rows as cards at 390 px. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Browser, Page } from 'playwright-core'
import { horizontalOverflow, launchBrowser, openPage, screenshot } from '../support/browser.ts'
import { postTask, startTestServer, startWsAgent, type TestServer, TOKEN, type WsAgent } from '../support/helpers.ts'

const LIVE_MS = 10_000
const MONITOR_ONLY = 'monitor-only-token-0123456789'

describe('dashboard: operator actions, detail, filter and sort, quantiles, narrow screens', () => {
  let browser: Browser
  let server: TestServer
  const agents: WsAgent[] = []

  beforeAll(async () => {
    browser = await launchBrowser()
    server = startTestServer({ access: [{ token: MONITOR_ONLY, roles: ['monitor'] }] } as never)
    agents.push(await startWsAgent(server.wsUrl, { nodeId: 'alpha-eu', region: 'eu-west-1', weight: 2 }))
    agents.push(await startWsAgent(server.wsUrl, { nodeId: 'bravo-us', region: 'us-east-1', weight: 5 }))
    agents.push(await startWsAgent(server.wsUrl, { nodeId: 'charlie-asia', region: 'asia-east-1', weight: 1 }))
    for (let i = 0; i < 3; i++) await postTask(server.url, { region: 'eu-west-1', payload: { i } })
  })

  afterAll(async () => {
    for (const agent of agents) agent.close()
    await server?.stop()
    await browser?.close()
  })

  async function signedIn(width = 1280, token = TOKEN) {
    const watched = await openPage(browser, { width })
    await watched.page.goto(`${server.url}/dashboard`)
    await watched.page.fill('#token', token)
    await watched.page.click('#login-submit')
    await watched.page.waitForSelector('#board', { state: 'visible', timeout: LIVE_MS })
    await watched.page.locator('tr[data-node="charlie-asia"]').waitFor({ timeout: LIVE_MS })
    return watched
  }

  test('a click on a client shows its recent tasks with every attempt; drain, undrain, eject and forget act on it', async () => {
    const extra = await startWsAgent(server.wsUrl, { nodeId: 'delta-eu', region: 'eu-west-2' })
    await postTask(server.url, { region: 'eu-west-2', payload: { for: 'delta' } })
    const { page, errors, close } = await signedIn()
    await page.locator('tr[data-node="delta-eu"]').waitFor({ timeout: LIVE_MS })
    await page.click('tr[data-node="delta-eu"]')
    await page.waitForSelector('#client-detail .detail-tasks > li', { timeout: LIVE_MS })
    expect(await page.textContent('#detail-title')).toBe('delta-eu')
    const attempt = await page.textContent('#client-detail .attempts li')
    expect(attempt).toMatch(/^#1 delta-eu · answered 200 · /)
    await screenshot(page, 'dashboard-detail-1280')

    await page.click('[data-action="drain"]')
    await waitForText(page, '#detail-message', 'delta-eu drained: it finishes its tasks and gets no new ones.')
    await waitForText(page, 'tr[data-node="delta-eu"] [data-field="state"]', 'healthy drained')
    expect(server.server.registry.get('delta-eu')?.operatorDrained).toBe(true)
    expect(await page.isVisible('[data-action="drain"]')).toBe(false)

    await page.click('[data-action="undrain"]')
    await waitForText(page, '#detail-message', 'delta-eu undrained: it takes tasks again.')
    expect(server.server.registry.get('delta-eu')?.operatorDrained).toBe(false)

    await page.click('[data-action="eject"]')
    await waitForText(page, '#detail-message', 'delta-eu ejected: back on probation when its time is up.')
    await page.waitForFunction(() => document.querySelector('tr[data-node="delta-eu"] [data-field="state"]')?.textContent?.startsWith('ejected'), undefined, {
      timeout: LIVE_MS,
    })
    expect(server.server.registry.get('delta-eu')?.state).toBe('ejected')

    await page.click('[data-action="forget"]')
    await waitForText(page, '#detail-message', 'delta-eu forgotten: removed (an agent still running registers again).')
    await page.waitForSelector('tr[data-node="delta-eu"].gone', { timeout: LIVE_MS })
    expect(server.server.registry.get('delta-eu')).toBeUndefined()
    expect((await extra.closed).code).toBe(4003)
    expect(errors).toEqual([])
    await close()
  })

  test('a token without the admin role sees the detail, and is told why an action is refused', async () => {
    const { page, errors, close } = await signedIn(1280, MONITOR_ONLY)
    await page.click('tr[data-node="alpha-eu"]')
    await page.waitForSelector('#client-detail .detail-tasks > li', { timeout: LIVE_MS })
    expect(await page.locator('#client-detail .detail-tasks > li').count()).toBe(3)
    await page.click('[data-action="drain"]')
    await waitForText(page, '#detail-message', 'This token may not act on clients: operator actions need a token with the admin role.')
    expect(server.server.registry.get('alpha-eu')?.operatorDrained).toBe(false)
    // The browser logs the 403 of the fetch as a console error: that one is expected, nothing else.
    expect(errors.filter((error) => !error.includes('403'))).toEqual([])
    await close()
  })

  test('filters the clients by node or region, and sorts by a clicked column', async () => {
    const { page, errors, close } = await signedIn()
    const shown = () =>
      page.evaluate(() => Array.from(document.querySelectorAll<HTMLTableRowElement>('#clients tbody tr:not([hidden])'), (row) => row.dataset.node))
    expect(await shown()).toEqual(['alpha-eu', 'charlie-asia', 'bravo-us'].sort((a, b) => region(a).localeCompare(region(b))))

    await page.fill('#clients-filter', 'us-east')
    expect(await shown()).toEqual(['bravo-us'])
    expect(await page.textContent('#clients-count')).toContain('1 of 3 shown')
    await page.fill('#clients-filter', 'ALPHA')
    expect(await shown()).toEqual(['alpha-eu'])
    await page.fill('#clients-filter', 'nothing-like-this')
    expect(await shown()).toEqual([])
    expect(await page.isVisible('#clients-no-match')).toBe(true)
    await page.fill('#clients-filter', '')

    await page.click('th button[data-sort="weight"]')
    expect(await shown()).toEqual(['charlie-asia', 'alpha-eu', 'bravo-us'])
    expect(await page.getAttribute('th:has(button[data-sort="weight"])', 'aria-sort')).toBe('ascending')
    await page.click('th button[data-sort="weight"]')
    expect(await shown()).toEqual(['bravo-us', 'alpha-eu', 'charlie-asia'])
    expect(await page.getAttribute('th:has(button[data-sort="weight"])', 'aria-sort')).toBe('descending')
    await page.click('th button[data-sort="node"]')
    expect(await shown()).toEqual(['alpha-eu', 'bravo-us', 'charlie-asia'])
    expect(errors).toEqual([])
    await close()
  })

  test('shows p50, p95 and p99 of the task latency from the histogram', async () => {
    const { page, errors, close } = await signedIn()
    // Three tasks ran before the page opened; the snapshot's status line carries the quantiles.
    await page.waitForFunction(() => document.querySelector('#tile-p50')?.textContent?.startsWith('≤ '), undefined, { timeout: LIVE_MS })
    const status = await quantilesNow(page)
    expect(status.p50).toMatch(/^≤ \d+(\.\d+)? (ms|s)$/)
    expect(status.rest).toMatch(/^p95 ≤ \d+(\.\d+)? (ms|s) · p99 ≤ \d+(\.\d+)? (ms|s)$/)
    expect(errors).toEqual([])
    await close()
  })

  test('at 390 px the clients and tasks rows are cards inside their boxes, and the sort is a select', async () => {
    const { page, errors, close } = await signedIn(390)
    await page.waitForSelector('#tasks tbody tr', { timeout: LIVE_MS })
    expect(await horizontalOverflow(page)).toBe(0)
    for (const table of ['#clients', '#tasks']) {
      const fits = await page.evaluate((selector) => {
        const box = document.querySelector(selector)!.closest('.panel')!.getBoundingClientRect()
        const rows = Array.from(document.querySelectorAll(`${selector} tbody tr`), (row) => row.getBoundingClientRect())
        const wrap = document.querySelector(selector)!.closest('.table-wrap')!
        return {
          rows: rows.length > 0,
          inside: rows.every((row) => row.left >= box.left && row.right <= box.right),
          scrollsSideways: wrap.scrollWidth > wrap.clientWidth,
          headingsHidden: getComputedStyle(document.querySelector(`${selector} thead`)!).display === 'none',
        }
      }, table)
      expect({ table, ...fits }).toEqual({ table, rows: true, inside: true, scrollsSideways: false, headingsHidden: true })
    }
    // Each cell carries its heading as a label.
    expect(await page.evaluate(() => getComputedStyle(document.querySelector('#clients td[data-field="region"]')!, '::before').content)).toBe('"Region"')
    await page.selectOption('#clients-sort', 'weight')
    const order = await page.evaluate(() => Array.from(document.querySelectorAll<HTMLTableRowElement>('#clients tbody tr'), (row) => row.dataset.node))
    expect(order).toEqual(['charlie-asia', 'alpha-eu', 'bravo-us'])
    await screenshot(page, 'dashboard-cards-390')
    await page.click('tr[data-node="alpha-eu"]')
    await page.waitForSelector('#client-detail .detail-tasks > li', { timeout: LIVE_MS })
    expect(await horizontalOverflow(page)).toBe(0)
    await screenshot(page, 'dashboard-detail-390')
    expect(errors).toEqual([])
    await close()
  })

  test('at 390 px a draining client\'s badges stay inside its card, and "ap-southeast-1" is not broken at its hyphen', async () => {
    const draining = await startWsAgent(server.wsUrl, { nodeId: 'echo-sg', region: 'ap-southeast-1', weight: 0 })
    const { page, errors, close } = await signedIn(390)
    try {
      await page.locator('tr[data-node="echo-sg"] [data-field="state"] .badge:text("draining")').waitFor({ timeout: LIVE_MS })
      const layout = await page.evaluate(() => {
        const row = document.querySelector('tr[data-node="echo-sg"]')!
        const card = row.getBoundingClientRect()
        const badges = Array.from(row.querySelectorAll('[data-field="state"] .badge'), (badge) => badge.getBoundingClientRect())
        const regionCell = row.querySelector('[data-field="region"]')!
        // The text itself, not the boxes around it.
        const text = document.createRange()
        text.selectNodeContents(document.createTreeWalker(regionCell, NodeFilter.SHOW_TEXT).nextNode()!)
        // One line box per line the text takes: fragments on one line share their top.
        const lines = new Set(Array.from(text.getClientRects(), (rect) => Math.round(rect.top)))
        return {
          badgesInside: badges.length === 2 && badges.every((badge) => badge.left >= card.left && badge.right <= card.right),
          regionText: regionCell.textContent,
          regionLines: lines.size,
        }
      })
      await screenshot(page, 'dashboard-draining-390')
      expect(layout).toEqual({ badgesInside: true, regionText: 'ap-southeast-1', regionLines: 1 })
      expect(await horizontalOverflow(page)).toBe(0)
      expect(errors).toEqual([])
    } finally {
      draining.close()
      await close()
    }
  })
})

function region(nodeId: string): string {
  return { 'alpha-eu': 'eu-west-1', 'bravo-us': 'us-east-1', 'charlie-asia': 'asia-east-1' }[nodeId] ?? ''
}

async function quantilesNow(page: Page): Promise<{ p50: string | null; rest: string | null }> {
  return { p50: await page.textContent('#tile-p50'), rest: await page.textContent('#tile-quantiles') }
}

async function waitForText(page: Page, selector: string, text: string): Promise<void> {
  try {
    await page.waitForFunction(([at, expected]) => document.querySelector(at!)?.textContent?.replace(/\s+/g, ' ').trim() === expected, [selector, text], {
      timeout: LIVE_MS,
    })
  } catch {
    throw new Error(`${selector} never read "${text}"; it reads "${await page.textContent(selector)}"`)
  }
}
