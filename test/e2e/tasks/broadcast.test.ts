import { describe, expect, test } from 'bun:test'
import { postTask, startHttpAgent, startWsAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer, server } = testScope()

describe('broadcast', () => {
  test('reaches every healthy client under the region, WebSocket and HTTP, and nobody outside it', async () => {
    const mls = server()
    const wsEast = await startWsAgent(mls.wsUrl, { nodeId: 'ws-east', region: 'us-east-1' })
    const wsUsa = await startWsAgent(mls.wsUrl, { nodeId: 'ws-usa', region: 'usa' })
    const wsEu = await startWsAgent(mls.wsUrl, { nodeId: 'ws-eu', region: 'eu-west-1' })
    const httpWest = await startHttpAgent(mls.url, { nodeId: 'http-west', region: 'us-west-1' })
    defer(wsEast.close)
    defer(wsUsa.close)
    defer(wsEu.close)
    defer(httpWest.stop)

    const result = await postTask(mls.url, { region: 'usa', mode: 'broadcast', payload: { ping: 1 } })
    expect(result.status).toBe(200)
    const body = result.json()
    expect(body).toMatchObject({ region: 'usa', targets: 3, answered: 3, task_id: result.headers.get('x-task-id') })
    const byNode = Object.fromEntries(body.results.map((entry: { node_id: string }) => [entry.node_id, entry]))
    expect(Object.keys(byNode).sort()).toEqual(['http-west', 'ws-east', 'ws-usa'])
    expect(byNode['ws-east']).toEqual({ node_id: 'ws-east', protocol: 'ws', status: 200, response: { node: 'ws-east', echo: { ping: 1 } } })
    expect(byNode['http-west']).toEqual({ node_id: 'http-west', protocol: 'http', status: 200, response: { node: 'http-west', echo: { ping: 1 } } })
    expect(wsEu.received).toEqual([])
  })

  test('a draining client is left out; a client that does not answer in time is reported, not waited on forever', async () => {
    const mls = server({ task_timeout: 0.5 })
    const answers = await startWsAgent(mls.wsUrl, { nodeId: 'answers', region: 'asia' })
    const silent = await startWsAgent(mls.wsUrl, { nodeId: 'silent', region: 'asia', answer: () => null })
    const drained = await startWsAgent(mls.wsUrl, { nodeId: 'drained', region: 'asia', weight: 0 })
    defer(answers.close)
    defer(silent.close)
    defer(drained.close)
    const result = await postTask(mls.url, { region: 'asia', mode: 'broadcast', payload: 'hello' })
    expect(result.status).toBe(200)
    const body = result.json()
    expect(body).toMatchObject({ targets: 2, answered: 1 })
    expect(body.results.find((entry: { node_id: string }) => entry.node_id === 'silent')).toMatchObject({
      status: 504,
      error: expect.stringContaining('timed out'),
    })
    expect(silent.received).toEqual(['hello'])
    expect(drained.received).toEqual([])
  })

  test('broadcast to a region with no client is a 503 naming it', async () => {
    const mls = server()
    const result = await postTask(mls.url, { region: 'europe', mode: 'broadcast', payload: 1 })
    expect(result.status).toBe(503)
    expect(result.json()).toMatchObject({ code: 'no_client', region: 'europe' })
  })
})

describe('WebSocket clients', () => {
  // Since issue 11 a live connection keeps its node_id (it used to be replaced, which let anyone take an
  // agent's tasks); a connection that no longer answers is still replaced (test/e2e/fleet/node-claims.test.ts).
  test('a node_id registering again while its old connection answers is refused; the old one keeps serving', async () => {
    const mls = server()
    const old = await startWsAgent(mls.wsUrl, { nodeId: 'same', region: 'usa' })
    defer(old.close)
    await expect(startWsAgent(mls.wsUrl, { nodeId: 'same', region: 'usa' })).rejects.toThrow('node_id_in_use')
    const result = await postTask(mls.url, { region: 'usa', payload: 'x' })
    expect(result.status).toBe(200)
    expect(old.received).toEqual(['x'])
    expect(mls.server.registry.get('same')).toBeDefined()
  })

  test('a heartbeat can change the weight; closing the socket removes the client', async () => {
    const mls = server()
    const agent = await startWsAgent(mls.wsUrl, { nodeId: 'w', region: 'usa' })
    agent.send({ type: 'heartbeat', payload: { weight: 0 } })
    await agent.next('heartbeat_ack')
    expect(mls.server.registry.get('w')!.weight).toBe(0)
    expect((await postTask(mls.url, { region: 'usa', payload: 1 })).status).toBe(503)
    agent.close()
    await agent.closed
    const clients = async () => (await (await fetch(`${mls.url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()).clients
    await waitFor(async () => (await clients()).length === 0, 'the client to be removed')
    expect(await clients()).toEqual([])
  })
})
