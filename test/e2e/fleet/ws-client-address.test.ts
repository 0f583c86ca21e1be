/**
 * Where a WebSocket client is, as /clients and `moonlight clients` show it: the source address of its
 * socket and no port (it is never called at one), whatever its `register` claims. An HTTP client keeps
 * ip:port, the address the server calls.
 */
import { describe, expect, test } from 'bun:test'
import { clientListSchema } from '../../../src/wire/views.ts'
import { runMain } from '../../support/cli.ts'
import { startHttpAgent, TOKEN, testScope } from '../../support/helpers.ts'
import { startOriginalWsClient } from '../../support/original-clients.ts'

const { defer, server } = testScope()

async function clients(url: string) {
  const response = await fetch(`${url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
  expect(response.status).toBe(200)
  // The schema the OpenAPI document is generated from: a null port must pass it.
  return clientListSchema.parse(await response.json()).clients
}

describe('a WebSocket client is shown at its source address, with no port', () => {
  test("the original's client claims 192.168.1.100:3000 in register; /clients shows 127.0.0.1 and port null, the HTTP agent ip:port", async () => {
    const mls = server()
    const original = startOriginalWsClient(mls.wsUrl, { nodeId: 'robust-1', region: 'usa' })
    defer(original.close)
    await original.registered
    const http = await startHttpAgent(mls.url, { nodeId: 'http-1', region: 'usa' })
    defer(http.stop)
    const byNode = Object.fromEntries((await clients(mls.url)).map((client) => [client.node_id, client]))
    expect(byNode['robust-1']).toMatchObject({ protocol: 'ws', ip: '127.0.0.1', port: null })
    expect(byNode['http-1']).toMatchObject({ protocol: 'http', ip: '127.0.0.1', port: http.port })
    // The table `moonlight clients` prints: the address column has no port for the WebSocket client.
    const table = await runMain(['clients', '--server', mls.url, '--token', TOKEN])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(/^robust-1\s+usa\s+ws\s+127\.0\.0\.1\s/m)
    expect(table.stdout).toContain(`127.0.0.1:${http.port}`)
    expect(table.stdout).not.toContain('3000')
    expect(table.stdout).not.toContain('192.168.1.100')
  })

  test('behind a trusted proxy, the address X-Forwarded-For names, not the proxy nor what register says', async () => {
    const mls = server({ trusted_proxies: ['127.0.0.1/32'] })
    // Bun's WebSocket takes request headers: the proxy's X-Forwarded-For on the upgrade.
    const socket = new WebSocket(mls.wsUrl, { headers: { 'x-forwarded-for': '203.0.113.9' } } as unknown as string[])
    defer(() => socket.close())
    const registered = new Promise<unknown>((resolve, reject) => {
      socket.addEventListener('message', (event) => resolve(JSON.parse(String(event.data))))
      socket.addEventListener('close', () => reject(new Error('closed before registered')))
    })
    socket.addEventListener('open', () =>
      socket.send(JSON.stringify({ type: 'register', payload: { ip: '10.9.9.9', port: 4444, node_id: 'proxied-1', token: TOKEN, region: 'usa' } })),
    )
    expect(await registered).toMatchObject({ type: 'registered' })
    expect((await clients(mls.url)).find((client) => client.node_id === 'proxied-1')).toMatchObject({ ip: '203.0.113.9', port: null })
  })
})
