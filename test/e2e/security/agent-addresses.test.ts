/**
 * Where the server may call an HTTP agent. Every refusal is checked at registration and no task is
 * ever sent: this test makes the server connect nowhere but 127.0.0.1.
 */
import { describe, expect, test } from 'bun:test'
import { connect } from 'node:net'
import { agentAddress } from '../../../src/security/agent-call-address.ts'
import { sourceAddress } from '../../../src/security/caller-address.ts'
import { Networks, PRIVATE_NETWORKS } from '../../../src/security/networks.ts'
import { TOKEN, testScope } from '../../support/helpers.ts'

const { server } = testScope()

/** A heartbeat sent from a chosen loopback address (all of 127.0.0.0/8 is this machine). */
function heartbeatFrom(url: string, localAddress: string, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  const { port } = new URL(url)
  const json = JSON.stringify({ node_id: 'edge-1', token: TOKEN, region: 'usa', port: 4000, ...body })
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')
  return new Promise<{ status: number; body: any }>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: Number(port), localAddress })
    let text = ''
    socket.on('connect', () =>
      socket.write(
        `POST /client/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n${extra}\r\n${json}`,
      ),
    )
    socket.on('data', (chunk) => {
      text += chunk
    })
    socket.on('end', () => {
      const [head = '', payload = ''] = text.split('\r\n\r\n')
      resolve({ status: Number(head.split(' ')[1]), body: payload ? JSON.parse(payload) : undefined })
    })
    socket.on('error', reject)
  })
}

describe('where an HTTP agent may be called', () => {
  test('without ip it is called at the address its heartbeat came from', async () => {
    const mls = server()
    const answer = await heartbeatFrom(mls.url, '127.0.0.2', {})
    expect(answer.status).toBe(200)
    expect(mls.server.registry.get('edge-1')!.ip).toBe('127.0.0.2')
  })

  test('an ip equal to its own source address is accepted, whatever its kind (an agent on the same host)', async () => {
    const mls = server()
    expect((await heartbeatFrom(mls.url, '127.0.0.2', { ip: '127.0.0.2' })).status).toBe(200)
  })

  for (const [kind, ip] of [
    ['loopback', '127.0.0.1'],
    ['loopback (IPv6)', '::1'],
    ['link-local', '169.254.169.254'],
    ['link-local (IPv6)', 'fe80::1'],
    ['unspecified', '0.0.0.0'],
    ['multicast', '224.0.0.1'],
    ['broadcast', '255.255.255.255'],
  ] as const) {
    test(`a ${kind} ip other than its own source is refused: 403 address_not_allowed naming the setting`, async () => {
      const mls = server()
      const answer = await heartbeatFrom(mls.url, '127.0.0.2', { ip })
      expect(answer.status).toBe(403)
      expect(answer.body.code).toBe('address_not_allowed')
      expect(answer.body.error).toContain('agents.allowed_networks')
      expect(answer.body.error).toContain(kind.replace(' (IPv6)', ''))
      expect(mls.server.registry.get('edge-1')).toBeUndefined()
    })
  }

  test('a public address that is not its source is refused', async () => {
    const mls = server()
    const answer = await heartbeatFrom(mls.url, '127.0.0.2', { ip: '203.0.113.7' })
    expect(answer.status).toBe(403)
    expect(answer.body.error).toContain('outside agents.allowed_networks')
  })

  test('a host name is resolved and each address checked; the call goes to the address checked', async () => {
    const mls = server()
    // localhost is 127.0.0.1: not the source 127.0.0.2, so refused…
    const refused = await heartbeatFrom(mls.url, '127.0.0.2', { ip: 'localhost' })
    expect(refused.status).toBe(403)
    expect(refused.body.error).toContain('ip localhost (127.0.0.1)')
    // …and from 127.0.0.1 itself accepted, pinned to the address, not the name.
    expect((await heartbeatFrom(mls.url, '127.0.0.1', { ip: 'localhost' })).status).toBe(200)
    expect(mls.server.registry.get('edge-1')!.ip).toBe('127.0.0.1')
  })

  test('a special address listed in agents.allowed_networks itself is accepted', async () => {
    const mls = server({ agents: { allowed_networks: ['127.0.0.0/8'] } })
    expect((await heartbeatFrom(mls.url, '127.0.0.2', { ip: '127.0.0.1' })).status).toBe(200)
  })

  test('invalid networks in the config are refused at start-up', async () => {
    expect(() => server({ agents: { allowed_networks: ['10.0.0.0/33'] } })).toThrow('agents.allowed_networks.0')
    expect(() => server({ trusted_proxies: ['not-a-network'] })).toThrow('trusted_proxies.0')
  })
})

describe('trusted_proxies', () => {
  test('X-Forwarded-For from a trusted proxy gives the source address; from anyone else it is ignored', async () => {
    const mls = server({ trusted_proxies: ['127.0.0.1'] })
    const viaProxy = await heartbeatFrom(mls.url, '127.0.0.1', { ip: '127.0.0.3' }, { 'X-Forwarded-For': '127.0.0.3' })
    expect(viaProxy.status).toBe(200)
    const spoofed = await heartbeatFrom(mls.url, '127.0.0.2', { node_id: 'edge-2', ip: '127.0.0.3' }, { 'X-Forwarded-For': '127.0.0.3' })
    expect(spoofed.status).toBe(403)
  })
})

describe('the address rules, as pure functions', () => {
  const allowed = Networks.parse(PRIVATE_NETWORKS)

  test('private ranges are allowed by default, public and special ones are not', async () => {
    expect(await agentAddress('10.1.2.3', '127.0.0.1', allowed)).toBe('10.1.2.3')
    expect(await agentAddress('fd12::1', '127.0.0.1', allowed)).toBe('fd12::1')
    await expect(agentAddress('8.8.8.8', '127.0.0.1', allowed)).rejects.toMatchObject({ code: 'address_not_allowed' })
    await expect(agentAddress('::ffff:127.0.0.1', '10.0.0.1', allowed)).rejects.toMatchObject({ code: 'address_not_allowed' })
  })

  test('a host name with one bad address among good ones is refused (no rebinding through a mixed answer)', async () => {
    const resolve = async () => ['10.0.0.5', '169.254.169.254']
    await expect(agentAddress('agent.internal', '127.0.0.1', allowed, resolve)).rejects.toMatchObject({ code: 'address_not_allowed' })
    expect(await agentAddress('agent.internal', '127.0.0.1', allowed, async () => ['10.0.0.5', '10.0.0.6'])).toBe('10.0.0.5')
  })

  test('0.0.0.0/0 does not list special addresses: only an entry inside their range does', () => {
    const everything = Networks.parse(['0.0.0.0/0'])
    expect(everything.has('8.8.8.8')).toBe(true)
    expect(everything.has('127.0.0.1')).toBe(false)
    expect(Networks.parse(['169.254.169.254']).has('169.254.169.254')).toBe(true)
  })

  test('X-Forwarded-For is read right to left, through trusted hops only; garbage ends it', () => {
    const proxies = Networks.parse(['127.0.0.1', '10.0.0.0/8'])
    expect(sourceAddress('127.0.0.1', '1.2.3.4, 10.0.0.9', proxies)).toBe('1.2.3.4')
    expect(sourceAddress('127.0.0.1', 'spoofed, 5.6.7.8', proxies)).toBe('5.6.7.8')
    expect(sourceAddress('127.0.0.1', 'garbage', proxies)).toBe('127.0.0.1')
    expect(sourceAddress('192.0.2.1', '1.2.3.4', proxies)).toBe('192.0.2.1')
  })
})
