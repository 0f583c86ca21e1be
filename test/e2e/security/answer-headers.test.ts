import { describe, expect, test } from 'bun:test'
import { postJson, postTask, startHttpAgent, startWsAgent, TOKEN, testScope } from '../../support/helpers.ts'

const { defer, server } = testScope()

const HOSTILE = {
  'Set-Cookie': 'session=stolen; Path=/',
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Credentials': 'true',
  'Content-Security-Policy': "default-src *; script-src 'unsafe-inline'",
  'Strict-Transport-Security': 'max-age=0',
  'X-Frame-Options': 'ALLOWALL',
  'X-Content-Type-Options': 'sniff-away',
  'X-Moonlight-Node': 'impostor',
  Location: 'https://evil.example/',
  Refresh: '0; url=https://evil.example/',
}
const KEPT = {
  'Content-Type': 'text/html; charset=utf-8',
  'Content-Language': 'de',
  'Cache-Control': 'max-age=60',
  ETag: '"v1"',
  'Last-Modified': 'Tue, 01 Dec 2026 08:00:00 GMT',
  'X-Request-Cost': '3',
}

function expectSafe(headers: Headers, nodeId: string) {
  for (const name of Object.keys(HOSTILE))
    if (!['X-Content-Type-Options', 'X-Moonlight-Node', 'Content-Security-Policy'].includes(name)) expect(headers.get(name)).toBeNull()
  expect(headers.get('x-content-type-options')).toBe('nosniff')
  expect(headers.get('content-security-policy')).toBe('sandbox')
  expect(headers.get('x-moonlight-node')).toBe(nodeId)
  for (const [name, value] of Object.entries(KEPT)) expect(headers.get(name)).toBe(value)
}

describe('agents cannot speak for the server', () => {
  test("a WebSocket agent's Set-Cookie, CORS, security headers and redirects are dropped; content headers and X-* pass", async () => {
    const mls = server()
    const agent = await startWsAgent(mls.wsUrl, {
      nodeId: 'ws-1',
      region: 'usa',
      answer: () => ({ response: '<script>alert(document.cookie)</script>', headers: { ...HOSTILE, ...KEPT } }),
    })
    defer(agent.close)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.status).toBe(200)
    // The body and its type pass as they are; the sandbox keeps the script from running as the server's page.
    expect(result.text).toBe('<script>alert(document.cookie)</script>')
    expectSafe(result.headers, 'ws-1')
  })

  test("an HTTP agent's answer passes the same allow-list", async () => {
    const mls = server()
    const agent = await startHttpAgent(mls.url, {
      nodeId: 'http-1',
      region: 'usa',
      work: () => new Response('<b>hi</b>', { headers: { ...HOSTILE, ...KEPT } }),
    })
    defer(agent.stop)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.text).toBe('<b>hi</b>')
    expectSafe(result.headers, 'http-1')
  })

  test('answers.pass_headers widens the list, but never to framing headers', async () => {
    const mls = server({ answers: { pass_headers: ['Access-Control-Allow-Origin', 'Location', 'Transfer-Encoding'] } })
    const agent = await startWsAgent(mls.wsUrl, {
      nodeId: 'ws-1',
      region: 'usa',
      answer: () => ({
        response: { ok: true },
        headers: { 'Access-Control-Allow-Origin': 'https://app.example', Location: '/next', 'Transfer-Encoding': 'chunked' },
      }),
    })
    defer(agent.close)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.json()).toEqual({ ok: true })
    expect(result.headers.get('access-control-allow-origin')).toBe('https://app.example')
    expect(result.headers.get('location')).toBe('/next')
    expect(result.headers.get('transfer-encoding')).toBeNull()
  })

  test('every JSON endpoint and error carries nosniff', async () => {
    const mls = server()
    const auth = { headers: { authorization: `Bearer ${TOKEN}` } }
    for (const path of ['/status', '/regions', '/healthz', '/clients', '/metrics', '/nope']) {
      expect({ path, nosniff: (await fetch(`${mls.url}${path}`, auth)).headers.get('x-content-type-options') }).toEqual({ path, nosniff: 'nosniff' })
    }
    expect((await postTask(mls.url, { region: 'usa', payload: 1 })).headers.get('x-content-type-options')).toBe('nosniff')
    expect((await postJson(`${mls.url}/client/heartbeat`, {})).headers.get('x-content-type-options')).toBe('nosniff')
  })
})

describe('an agent cannot send the server elsewhere', () => {
  test("an HTTP agent's redirect is its answer, never followed: the server calls nothing it did not check", async () => {
    const mls = server()
    // The "internal service" a redirect points at: it must never be called.
    const internal: string[] = []
    const secret = Bun.serve({
      port: 0,
      hostname: '127.0.0.1',
      fetch: (request) => {
        internal.push(request.url)
        return new Response('SECRET-FROM-INTERNAL')
      },
    })
    defer(() => secret.stop(true))
    for (const status of [301, 302, 303, 307, 308]) {
      const agent = await startHttpAgent(mls.url, {
        nodeId: `redirector-${status}`,
        region: `r${status}`,
        work: () => new Response(null, { status, headers: { location: `http://127.0.0.1:${secret.port}/latest/meta-data` } }),
      })
      defer(agent.stop)
      const result = await postTask(mls.url, { region: `r${status}`, payload: 1 })
      expect(result.status).toBe(status)
      expect(result.text).not.toContain('SECRET')
      expect(result.headers.get('location')).toBeNull()
    }
    expect(internal).toEqual([])
  })

  test('headers a proxy in front would obey (X-Accel-Redirect, X-Sendfile) are dropped', async () => {
    const mls = server()
    const agent = await startWsAgent(mls.wsUrl, {
      nodeId: 'ws-1',
      region: 'usa',
      answer: () => ({
        response: 'x',
        headers: { 'content-type': 'text/plain', 'X-Accel-Redirect': '/internal/secret', 'X-Sendfile': '/etc/passwd', 'X-Kept': '1' },
      }),
    })
    defer(agent.close)
    const result = await postTask(mls.url, { region: 'usa', payload: 1 })
    expect(result.headers.get('x-accel-redirect')).toBeNull()
    expect(result.headers.get('x-sendfile')).toBeNull()
    expect(result.headers.get('x-kept')).toBe('1')
  })
})

describe('WebSocket Origin', () => {
  test("a page of another origin cannot open the WebSocket; the server's own origin and agents (no Origin) can", async () => {
    const mls = server({ ws: { allowed_origins: ['https://ops.example.com'] } })
    const upgrade = (origin?: string) =>
      fetch(`${mls.url}/ws`, {
        headers: {
          upgrade: 'websocket',
          connection: 'Upgrade',
          'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
          'sec-websocket-version': '13',
          ...(origin ? { origin } : {}),
        },
      })
    const foreign = await upgrade('https://evil.example')
    expect(foreign.status).toBe(403)
    expect(await foreign.json()).toMatchObject({ code: 'forbidden_origin' })
    expect((await upgrade(new URL(mls.url).origin)).status).toBe(101)
    expect((await upgrade('https://ops.example.com')).status).toBe(101)
    expect((await upgrade()).status).toBe(101)
  })
})
