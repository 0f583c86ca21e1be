/**
 * The original Moonlight's Python client, as written (test/fixtures/original_python_client.py: standard
 * library only, its own RFC 6455 framing), against the real server: it json.loads every payload, so it
 * works with ws.payload_format "string" and fails without it, as docs/migrating.md says.
 */
import { describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { clientListSchema } from '../../../src/wire/views.ts'
import { postTask, ROOT, startCli, TOKEN, testScope, waitFor } from '../../support/helpers.ts'

const CLIENT = join(ROOT, 'test/fixtures/original_python_client.py')
const { defer, server } = testScope()

/** python3, or a failure naming what to install: never a skipped test. */
function python(): string {
  const found = Bun.which('python3')
  if (!found) throw new Error('python3 is missing: install it (apt-get install -y python3) to run the original Python client')
  return found
}

function startPythonClient(wsUrl: string, nodeId: string, source?: string) {
  const client = startCli([CLIENT, wsUrl, nodeId, 'usa', TOKEN, ...(source ? [source] : [])], { command: [python()] })
  defer(() => client.kill('SIGKILL'))
  return client
}

async function clientView(url: string, nodeId: string) {
  const response = await fetch(`${url}/clients`, { headers: { authorization: `Bearer ${TOKEN}` } })
  return clientListSchema.parse(await response.json()).clients.find((client) => client.node_id === nodeId)
}

describe("the original's Python client", () => {
  test('with ws.payload_format "string" it parses every payload and answers, keeps its socket through pings, and shows at its source address', async () => {
    // Pings every 0.3 s and a socket silent for 1.5 s dropped: the client must answer pings (and heartbeat) to stay.
    const mls = server({ ws: { payload_format: 'string', heartbeat_interval: 0.3, read_timeout: 1.5, connection_check_interval: 0.5 } })
    // From 127.0.0.2, while its register claims 192.168.1.100:3000.
    const client = startPythonClient(mls.wsUrl, 'py-1', '127.0.0.2')
    await client.waitForOutput('registered')
    const payload = { action: 'process_data', data: { message: 'Hello', n: [1, 2.5, null, '"quoted"'] } }
    const result = await postTask(mls.url, { region: 'usa', payload })
    expect({ status: result.status, body: result.json() }).toEqual({ status: 200, body: { processed: true, original: payload } })
    expect(result.headers.get('x-moonlight-node')).toBe('py-1')
    expect((await postTask(mls.url, { region: 'us-east-1', payload: 'plain' })).json()).toEqual({ processed: true, original: 'plain' })
    // A payload over 64 KiB: the server's frame uses the 8-byte length, and the client's answer too.
    const big = { blob: 'x'.repeat(70_000) }
    const bigResult = await postTask(mls.url, { region: 'usa', payload: big })
    expect(bigResult.status).toBe(200)
    expect(bigResult.json()).toEqual({ processed: true, original: big })
    expect(await clientView(mls.url, 'py-1')).toMatchObject({ protocol: 'ws', ip: '127.0.0.2', port: null })

    // Past several read_timeouts: still registered and answering, so pongs and heartbeats went through.
    await Bun.sleep(4000)
    expect(client.output()).not.toContain('closed')
    expect((await postTask(mls.url, { region: 'usa', payload: { after: 'pings' } })).json()).toEqual({ processed: true, original: { after: 'pings' } })
    expect(client.count('parsed ')).toBe(4)
  }, 30_000)

  test('without it (the default "object"), json.loads fails on every object payload: the reason for the setting', async () => {
    const mls = server()
    const client = startPythonClient(mls.wsUrl, 'py-2')
    await client.waitForOutput('registered')
    const result = await postTask(mls.url, { region: 'usa', payload: { action: 'process_data' }, retry: false })
    // Its 500 is a failed attempt: with no retry, the caller gets the 502 that lists it.
    expect(result.status).toBe(502)
    expect(result.json()).toMatchObject({ code: 'all_attempts_failed', attempts: [{ node_id: 'py-2', status: 500 }] })
    await waitFor(() => client.output().includes('parse_error'), 'the parse error')
    expect(client.output()).toContain('the JSON object must be str')
  })
})
