/** The dashboard of one instance shows the whole cluster: agents held by another instance appear, and leave, live. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Browser } from 'playwright-core'
import { parseConfig } from '../../src/config/config.ts'
import { type MoonlightServer, startServer } from '../../src/server/server.ts'
import { launchBrowser, openPage, screenshot } from '../support/browser.ts'
import { SEED_CONFIG, startWsAgent, TOKEN } from '../support/helpers.ts'
import { startRedis, type TestRedis } from '../support/redis.ts'

const LIVE_MS = 10_000

describe('dashboard in cluster mode', () => {
  let browser: Browser
  let redis: TestRedis
  const instances: MoonlightServer[] = []

  beforeAll(async () => {
    browser = await launchBrowser()
    redis = await startRedis()
    for (const id of ['a', 'b']) {
      const config = { ...SEED_CONFIG, cluster: { redis_url: redis.url, instance_id: id, instance_ttl: 1 } }
      const server = startServer({ loaded: parseConfig(config, 'test'), port: 0, host: '127.0.0.1', log: () => {} })
      await server.ready
      instances.push(server)
    }
  })

  afterAll(async () => {
    for (const server of instances) await server.stop(0)
    await redis?.stop()
    await browser?.close()
  })

  test("A's dashboard shows an agent held by B, with its instance, and sees it leave", async () => {
    const [a, b] = instances as [MoonlightServer, MoonlightServer]
    const { page, errors, close } = await openPage(browser)
    await page.goto(`${a.url}/dashboard`)
    await page.fill('#token', TOKEN)
    await page.press('#token', 'Enter')
    await page.waitForSelector('#board', { state: 'visible', timeout: LIVE_MS })

    const agent = await startWsAgent(`${b.url.replace(/^http/, 'ws')}/ws`, { nodeId: 'held-by-b', region: 'eu-west-1' })
    const row = page.locator('tr[data-node="held-by-b"]')
    await row.waitFor({ timeout: LIVE_MS })
    expect(await row.locator('.address').getAttribute('data-instance')).toBe('b')
    expect(await row.locator('.address').textContent()).toContain('on b')
    await screenshot(page, 'dashboard-cluster')

    agent.close()
    await page.waitForSelector('tr[data-node="held-by-b"].gone', { timeout: LIVE_MS })
    expect(errors).toEqual([])
    await close()
  })
})
