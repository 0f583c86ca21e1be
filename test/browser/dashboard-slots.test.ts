/** The dashboard shows agents' slots and the slot queue (issue 24): a real server, a real agent, real Chromium. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Browser, Page } from 'playwright-core'
import { launchBrowser, openPage, screenshot } from '../support/browser.ts'
import { postTask, startTestServer, startWsAgent, type TestServer, TOKEN } from '../support/helpers.ts'

/** Long enough for a 500 ms batch to reach the page on a loaded machine; the feed itself is not timed here. */
const LIVE_MS = 10_000

describe('dashboard: slots and the queue', () => {
  let browser: Browser
  let server: TestServer

  beforeAll(async () => {
    browser = await launchBrowser()
    server = startTestServer({ queue: { timeout: 10 } })
  })

  afterAll(async () => {
    await server?.stop()
    await browser?.close()
  })

  test('shows a one-slot agent as 1 / 1 while busy, the task waiting for it in the queue tile, and a task shed when its wait ran out', async () => {
    const held: string[] = []
    const agent = await startWsAgent(server.wsUrl, {
      nodeId: 'gpu-1',
      region: 'eu-west-1',
      register: { max_in_flight: 1 },
      answer: (_payload, taskId) => {
        held.push(taskId)
        return null
      },
    })
    const { page, errors, close } = await openPage(browser)
    try {
      await page.goto(`${server.url}/dashboard`)
      await page.fill('#token', TOKEN)
      await page.press('#token', 'Enter')
      await page.waitForSelector('#board', { state: 'visible', timeout: LIVE_MS })
      await waitForText(page, 'tr[data-node="gpu-1"] [data-field="in_flight"]', '0 / 1')

      const running = postTask(server.url, { region: 'eu-west-1', payload: 'first' })
      const waiting = postTask(server.url, { region: 'eu-west-1', payload: 'second' })
      await waitForText(page, 'tr[data-node="gpu-1"] [data-field="in_flight"]', '1 / 1')
      await waitForText(page, '#tile-queue', '1')
      const shed = await postTask(server.url, { region: 'eu-west-1', payload: 'third', queue_timeout: 0.2 })
      expect(shed.status).toBe(503)
      await waitForText(page, '#tile-queue-sub', '1 shed', { contains: true })
      await screenshot(page, 'dashboard-slots-light')

      agent.send({ type: 'task_response', payload: { task_id: held[0], response: {} } })
      while (held.length < 2) await Bun.sleep(10)
      agent.send({ type: 'task_response', payload: { task_id: held[1], response: {} } })
      expect([(await running).status, (await waiting).status]).toEqual([200, 200])
      await waitForText(page, '#tile-queue', '0')
      await waitForText(page, '#tile-queue-sub', 'wait p50 ≤', { contains: true })
      await waitForText(page, 'tr[data-node="gpu-1"] [data-field="in_flight"]', '0 / 1')
      expect(await page.textContent('#tile-queue-sub')).toContain('0 retries refused')
      expect(errors).toEqual([])
    } finally {
      agent.close()
      await close()
    }
  })
})

/** Waits until the element's text is `text` (or, with `contains`, has it in it). */
async function waitForText(page: Page, selector: string, text: string, how: { contains?: boolean } = {}): Promise<void> {
  await page.waitForFunction(
    ({ selector, text, how }) => {
      const actual = document.querySelector(selector)?.textContent?.trim()
      if (actual === undefined) return false
      return how.contains ? actual.includes(text) : actual === text
    },
    { selector, text, how },
    { timeout: LIVE_MS },
  )
}
