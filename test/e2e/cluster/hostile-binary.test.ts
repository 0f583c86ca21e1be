/**
 * Bytes that are not JSON text in a cluster (a real redis-server, two `moonlight serve` instances):
 * a binary answer stored in Redis and read at the other instance, an Idempotency-Key replay of it
 * there, and text answers with lone surrogates relayed through Redis (batched, and spilled past 256 K
 * characters) coming back as the very bytes the agent's own instance gives.
 */
import { describe, expect, test } from 'bun:test'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { openWs, startHttpAgent, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance } = clusterScope(defer)
const HEADERS = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }
const sha256 = (bytes: Uint8Array) => new Bun.CryptoHasher('sha256').update(bytes).digest('hex')

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${url}/task/request`, { method: 'POST', headers: { ...HEADERS, ...headers }, body: JSON.stringify(body) })
  return { status: response.status, headers: response.headers, bytes: await response.bytes() }
}

describe('binary answers across a cluster', () => {
  test('stored in Redis and read at the other instance, replayed there by key, relayed text byte for byte', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a', { cluster: { relay_batch: true } })
    const b = await instance(redis.url, 'b', { cluster: { relay_batch: true } })
    // 300 000 random bytes (past the spill threshold were they text), never UTF-8.
    const image = new Uint8Array(300_000)
    for (let at = 0; at < image.length; at += 65_536) crypto.getRandomValues(image.subarray(at, Math.min(image.length, at + 65_536)))
    image[0] = 0x89
    const http = await startHttpAgent(a.url, {
      nodeId: 'png',
      region: 'eu-west-1',
      work: () => new Response(image, { headers: { 'content-type': 'image/png' } }),
    })
    defer(http.stop)
    // A WebSocket agent at B answering text with lone surrogates: short, or long enough to be spilled in parts.
    const texts: Record<string, string> = { short: 'a\ud800b'.repeat(10), plain: 'plain', long: 'é\ud83d\ude42x\ud800'.repeat(100_000) }
    const peer = await openWs(b.wsUrl)
    defer(peer.close)
    peer.socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data))
      if (message.type === 'task')
        peer.send({ type: 'task_response', payload: { task_id: message.task_id, headers: { 'content-type': 'text/plain' }, response: texts[message.payload] } })
    })
    peer.send({ type: 'register', payload: { node_id: 'texts', token: TOKEN, region: 'us-east-1' } })
    await peer.next('registered')
    await waitFor(async () => (await getJson(`${a.url}/clients`)).clients.some((c: { node_id: string }) => c.node_id === 'texts'), "A sees B's agent")

    const accepted = await post(a.url, { region: 'eu-west-1', payload: 1, mode: 'async' })
    const { task_id } = JSON.parse(new TextDecoder().decode(accepted.bytes))
    const stored = await fetch(`${b.url}/task/${task_id}/result?wait=10`, { headers: HEADERS })
    const keyed = [await post(a.url, { region: 'eu-west-1', payload: 2 }, { 'idempotency-key': 'png-1' })]
    keyed.push(await post(b.url, { region: 'eu-west-1', payload: 2 }, { 'idempotency-key': 'png-1' }))
    expect({
      stored: [stored.status, sha256(await stored.bytes())],
      keyed: keyed.map((answer) => [answer.status, answer.headers.get('idempotent-replayed'), sha256(answer.bytes)]),
      calls: http.received.length,
    }).toEqual({
      stored: [200, sha256(image)],
      keyed: [
        [200, null, sha256(image)],
        [200, 'true', sha256(image)],
      ],
      calls: 2,
    })

    const hex = (answer: { bytes: Uint8Array }) => Buffer.from(answer.bytes).toString('hex')
    const local = Object.fromEntries(
      await Promise.all(Object.keys(texts).map(async (name) => [name, hex(await post(b.url, { region: 'us-east-1', payload: name }))])),
    )
    // At once, so that B's replies go to A in one batch.
    const names = ['short', 'plain', 'short', 'plain', 'long']
    const relayed = await Promise.all(names.map((name) => post(a.url, { region: 'us-east-1', payload: name })))
    expect(relayed.map((answer, at) => [answer.status, answer.headers.get('x-moonlight-instance'), hex(answer) === local[names[at]!]])).toEqual(
      names.map(() => [200, 'b', true]),
    )
  }, 60_000)
})
