/**
 * Presence keys of another shape written straight into Redis (a hostile pass; real redis-server,
 * `moonlight serve` instances): they are not instances. The test failed before the fix.
 */
import { describe, expect, test } from 'bun:test'
import { RedisClient } from 'bun'
import { clusterScope, getJson } from '../../support/cluster.ts'
import { testScope, waitFor } from '../../support/helpers.ts'

const { defer } = testScope()
const { redisServer, instance } = clusterScope(defer)

describe('presence keys of another shape', () => {
  test('are not counted as instances: /cluster and moonlight_cluster_instances show the live ones only', async () => {
    const redis = await redisServer()
    const a = await instance(redis.url, 'a')
    const b = await instance(redis.url, 'b')
    await waitFor(async () => (await getJson(`${a.url}/cluster`)).instances.length === 2, 'A sees B')
    const client = new RedisClient(redis.url)
    defer(() => client.close())
    const valid = (id: string) =>
      JSON.stringify({ instance_id: id, incarnation: 'x', advertise_url: 'http://127.0.0.1:1', started_at: '', clients: 0, in_flight: 0, refreshed_at: '' })
    // An empty object, a string, a number, and an instance's presence under another id's key.
    const written: Array<[string, string]> = [
      ['mls:instance:empty', '{}'],
      ['mls:instance:string', '"str"'],
      ['mls:instance:number', '42'],
      ['mls:instance:elsewhere', valid('someone')],
    ]
    for (const [key, value] of written) await client.send('SET', [key, value])
    // Several ticks (instance_ttl 1 s: one every ~333 ms).
    await Bun.sleep(1500)
    const listed = (await getJson(`${a.url}/cluster`)).instances.map((info: { instance_id: string }) => info.instance_id).sort()
    const metrics = await (await fetch(`${a.url}/metrics`)).text()
    expect({ listed, counted: /^moonlight_cluster_instances (\S+)$/m.exec(metrics)?.[1], bUp: (await fetch(`${b.url}/readyz`)).status }).toEqual({
      listed: ['a', 'b'],
      counted: '2',
      bUp: 200,
    })
  }, 30_000)
})
