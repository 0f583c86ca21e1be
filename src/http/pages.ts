/// <reference path="../../public/embedded-files.d.ts" />
import type { Context, Hono } from 'hono'
import baseCss from '../../public/base.css' with { type: 'file' }
import chartJs from '../../public/chart.js' with { type: 'file' }
import clientDetailJs from '../../public/client-detail.js' with { type: 'file' }
import clientsTableJs from '../../public/clients-table.js' with { type: 'file' }
import dashboardCss from '../../public/dashboard.css' with { type: 'file' }
import dashboardHtml from '../../public/dashboard.html' with { type: 'file' }
import dashboardJs from '../../public/dashboard.js' with { type: 'file' }
import docsCss from '../../public/docs.css' with { type: 'file' }
import docsJs from '../../public/docs.js' with { type: 'file' }
import favicon from '../../public/favicon.svg' with { type: 'file' }
// Imported as files so `bun build --compile` embeds them: each import is a path (in the binary, under /$bunfs).
import indexHtml from '../../public/index.html' with { type: 'file' }
import monitorFeedJs from '../../public/monitor-feed.js' with { type: 'file' }
import regionTreeJs from '../../public/region-tree.js' with { type: 'file' }
import tasksListJs from '../../public/tasks-list.js' with { type: 'file' }
import testTaskJs from '../../public/test-task.js' with { type: 'file' }
import uiJs from '../../public/ui.js' with { type: 'file' }
import type { Config } from '../config/config.ts'
import type { AppEnv } from './app.ts'

/** bun-types calls an `.html` import an HTML bundle; imported `with { type: 'file' }` it is a plain path. */
const asPath = (imported: unknown): string => imported as string

/** Everything served under `html.static_path`, by file name: nothing else on disk is reachable. */
const ASSETS: Readonly<Record<string, string>> = {
  'base.css': baseCss,
  'docs.css': docsCss,
  'dashboard.css': dashboardCss,
  'favicon.svg': favicon,
  'ui.js': uiJs,
  'docs.js': docsJs,
  'dashboard.js': dashboardJs,
  'monitor-feed.js': monitorFeedJs,
  'chart.js': chartJs,
  'client-detail.js': clientDetailJs,
  'clients-table.js': clientsTableJs,
  'region-tree.js': regionTreeJs,
  'tasks-list.js': tasksListJs,
  'test-task.js': testTaskJs,
}

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  svg: 'image/svg+xml',
}

// Same-origin only: the pages load nothing from elsewhere, so any stray CDN link fails loudly in tests.
const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'content-security-policy': "default-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}
// Short: a new release shows within a minute; pages revalidate every time so they never point at stale assets for long.
const ASSET_CACHE = 'public, max-age=60'
const PAGE_CACHE = 'no-cache'

/**
 * Mounts the docs page (`html.index_path`), the dashboard (`html.dashboard_path`) and their assets
 * (`html.static_path/<file>`); nothing when `html.enabled` is false. Paths are read once: like
 * `ws.path`, they take effect at the next start.
 */
export function mountPages(app: Hono<AppEnv>, config: Config): void {
  const { html, ws } = config
  if (!html.enabled) return
  const staticPrefix = html.static_path.replace(/\/+$/, '')
  const values: PageValues = {
    static: staticPrefix,
    index: html.index_path,
    dashboard: html.dashboard_path,
    // Empty when WebSocket is off: the dashboard then says live monitoring is unavailable.
    ws_path: ws.enabled ? ws.path : '',
  }
  app.get(html.index_path, servePage(asPath(indexHtml), values))
  app.get(html.dashboard_path, servePage(asPath(dashboardHtml), values))
  app.get(`${staticPrefix}/:file`, (c, next) => {
    const name = c.req.param('file')
    // Own keys only: "constructor" or "__proto__" must be a 404, not a prototype member.
    const path = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined
    if (path === undefined) return next()
    const extension = name.slice(name.lastIndexOf('.') + 1)
    return new Response(Bun.file(path), {
      headers: { 'content-type': CONTENT_TYPES[extension] ?? 'application/octet-stream', 'cache-control': ASSET_CACHE, ...SECURITY_HEADERS },
    })
  })
}

/** What the pages need to know about this server's config, filled into their `{{name}}` slots. */
interface PageValues {
  static: string
  index: string
  dashboard: string
  ws_path: string
}

/** Serves one page, rendered on first request and kept: the values do not change while the server runs. */
function servePage(path: string, values: PageValues) {
  let rendered: Promise<string> | undefined
  return async (c: Context<AppEnv>) => {
    rendered ??= Bun.file(path)
      .text()
      .then((template) => fillSlots(template, values))
    return c.body(await rendered, 200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': PAGE_CACHE, ...SECURITY_HEADERS })
  }
}

function fillSlots(template: string, values: PageValues): string {
  return template.replace(/\{\{(\w+)\}\}/g, (slot, name: string) => {
    if (!(name in values)) throw new Error(`page template has an unknown slot ${slot}`)
    return escapeAttribute(values[name as keyof PageValues])
  })
}

/** Config paths land in attributes (href, src, data-*): keep a stray quote from ending one. */
function escapeAttribute(value: string): string {
  return value.replace(/[&"'<>]/g, (char) => `&#${char.charCodeAt(0)};`)
}
