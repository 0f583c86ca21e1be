import { describe, expect, test } from 'bun:test'
import { openWs, postJson, TOKEN, testScope } from '../../support/helpers.ts'

const { defer, server } = testScope()

const heartbeat = (url: string, nodeId: string) =>
  postJson(`${url}/client/heartbeat`, { ip: '127.0.0.1', node_id: nodeId, token: TOKEN, region: 'usa', port: 4000 })

describe('max_clients', () => {
  test('past max_clients a new client gets 503 too_many_clients, over HTTP and WebSocket; known ones keep working', async () => {
    const mls = server({ max_clients: 3 })
    for (const nodeId of ['a', 'b', 'c']) expect((await heartbeat(mls.url, nodeId)).status).toBe(200)
    const refused = await heartbeat(mls.url, 'd')
    expect(refused.status).toBe(503)
    expect(refused.json()).toEqual({
      error: 'the server holds as many clients as it may (max_clients = 3); try again later',
      code: 'too_many_clients',
      max_clients: 3,
    })
    // A known client refreshes as before.
    expect((await heartbeat(mls.url, 'a')).status).toBe(200)

    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    peer.send({ type: 'register', payload: { node_id: 'ws-d', token: TOKEN, region: 'usa' } })
    expect((await peer.next('error')).payload).toMatchObject({ code: 'too_many_clients' })
    expect((await peer.closed).code).toBe(1013)
    expect(mls.server.registry.size).toBe(3)

    // Room again once one leaves.
    mls.server.registry.remove('b', 'test')
    expect((await heartbeat(mls.url, 'd')).status).toBe(200)
  })

  test('the default is 100 000', async () => {
    const mls = server()
    expect(mls.server.settings.config.max_clients).toBe(100_000)
  })
})
