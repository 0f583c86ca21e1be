/** payload_format: the original Moonlight's clients read a task's payload as a JSON string and parse it themselves. */
import { describe, expect, test } from 'bun:test'
import { openWs, postTask, startWsAgent, TOKEN, testScope } from '../../support/helpers.ts'
import { startOriginalWsClient } from '../../support/original-clients.ts'

const { defer, server } = testScope()

describe('payload_format', () => {
  test("by default the payload is a JSON value, and a client that JSON.parses it fails (today's behaviour, kept)", async () => {
    const mls = server()
    const client = startOriginalWsClient(mls.wsUrl, { nodeId: 'robust-1', region: 'usa' })
    defer(client.close)
    await client.registered
    const result = await postTask(mls.url, { region: 'usa', payload: { action: 'process_data', data: { message: 'Hello' } } })
    expect(result.status).toBeGreaterThanOrEqual(500)
    expect(client.parsed[0]).toBeInstanceOf(Error)
  })

  test('ws.payload_format "string": the unmodified robust client parses every payload, object or not', async () => {
    const mls = server({ ws: { payload_format: 'string' } })
    const client = startOriginalWsClient(mls.wsUrl, { nodeId: 'robust-1', region: 'usa' })
    defer(client.close)
    await client.registered
    const payload = { action: 'process_data', data: { message: 'Hello', n: [1, 2.5, null, '"quoted"'] } }
    const result = await postTask(mls.url, { region: 'usa', payload })
    expect(result.status).toBe(200)
    expect(result.json()).toEqual({ processed: true, original: payload })
    expect((await postTask(mls.url, { region: 'usa', payload: 'plain' })).json()).toEqual({ processed: true, original: 'plain' })
    expect(client.parsed).toEqual([payload, 'plain'])
    // The payload's own text, byte for byte, as the string: nothing re-serialized on the way.
    const raw = '{"a" : 1,"b":[ true ]}'
    await postTask(mls.url, `{"region":"usa","payload":${raw}}`)
    const frame = client.messages.filter((message) => message.type === 'task').at(-1)!
    expect(frame.payload).toBe(raw)
  })

  test('"payload_format" in register: per agent, whatever the default; the object agent beside it is unchanged', async () => {
    const mls = server()
    const stringAgent = await openWs(mls.wsUrl)
    defer(stringAgent.close)
    stringAgent.send({ type: 'register', payload: { node_id: 'py-1', token: TOKEN, region: 'us-east-1', payload_format: 'string' } })
    expect((await stringAgent.next('registered')).payload).toMatchObject({ node_id: 'py-1', payload_format: 'string' })
    const objectAgent = await startWsAgent(mls.wsUrl, { nodeId: 'js-1', region: 'us-west-1' })
    defer(objectAgent.close)
    const answering = (async () => {
      for (;;) {
        const task = await stringAgent.next('task', 10_000)
        stringAgent.send({ type: 'task_response', payload: { task_id: task.task_id, response: { got: task.payload } } })
      }
    })()
    answering.catch(() => undefined)
    // A broadcast reaches both, each in its own format.
    const result = await postTask(mls.url, { region: 'usa', mode: 'broadcast', payload: { ping: 1 } })
    expect(result.status).toBe(200)
    const byNode = Object.fromEntries(result.json().results.map((entry: { node_id: string; response: unknown }) => [entry.node_id, entry.response]))
    expect(byNode).toEqual({ 'py-1': { got: '{"ping":1}' }, 'js-1': { node: 'js-1', echo: { ping: 1 } } })
    expect(objectAgent.received).toEqual([{ ping: 1 }])
  })

  test('a broadcast to string-format agents only: one string frame each, and the unmodified robust client answers', async () => {
    const mls = server({ ws: { payload_format: 'string' } })
    const first = startOriginalWsClient(mls.wsUrl, { nodeId: 'robust-1', region: 'us-east-1' })
    const second = startOriginalWsClient(mls.wsUrl, { nodeId: 'robust-2', region: 'eu-west-1' })
    defer(first.close)
    defer(second.close)
    await Promise.all([first.registered, second.registered])
    const result = await postTask(mls.url, { region: 'global', mode: 'broadcast', payload: [1, 2] })
    expect(result.json()).toMatchObject({ targets: 2, answered: 2 })
    expect(first.parsed).toEqual([[1, 2]])
    expect(second.parsed).toEqual([[1, 2]])
  })

  test('"payload_format" must be "object" or "string"', async () => {
    const mls = server()
    const peer = await openWs(mls.wsUrl)
    defer(peer.close)
    peer.send({ type: 'register', payload: { node_id: 'x', token: TOKEN, region: 'usa', payload_format: 'text' } })
    expect((await peer.next('error')).payload).toMatchObject({ code: 'invalid_message' })
  })
})
