import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../../../src/config/config.ts'
import { planReload } from '../../../src/config/reload.ts'
import { PRIVATE_NETWORKS } from '../../../src/security/networks.ts'

const TLS = { cert: '/etc/mls/fullchain.pem', key: '/etc/mls/key.pem' }

describe('security config', () => {
  test('tls, agents.ca and signing_secret are optional and known keys', () => {
    const { config, unknownKeys } = parseConfig({ tls: TLS, agents: { ca: '/etc/mls/agents-ca.pem' }, signing_secret: '0123456789abcdef' }, 'full.json')
    expect(unknownKeys).toEqual([])
    expect(config).toMatchObject({ tls: TLS, agents: { ca: '/etc/mls/agents-ca.pem' }, signing_secret: '0123456789abcdef' })
    const bare = parseConfig({}, 'empty.json').config
    expect([bare.tls, bare.agents, bare.signing_secret]).toEqual([undefined, { allowed_networks: PRIVATE_NETWORKS }, undefined])
  })

  test('tls needs both cert and key, as file paths', () => {
    expect(() => parseConfig({ tls: { cert: TLS.cert } }, 'half.json')).toThrow('  tls.key: required: "tls" needs both "cert" and "key"')
    expect(() => parseConfig({ tls: { key: TLS.key } }, 'half.json')).toThrow('  tls.cert: required: "tls" needs both "cert" and "key"')
    expect(() => parseConfig({ tls: { cert: '', key: 7 } }, 'bad.json')).toThrow('  tls.cert: must be a file path\n  tls.key: must be a file path')
    expect(() => parseConfig({ tls: true }, 'bad.json')).toThrow(/ {2}tls: /)
  })

  test('signing_secret has 16 characters at least; agents.ca is a path', () => {
    expect(() => parseConfig({ signing_secret: '0123456789abcde' }, 'short.json')).toThrow('  signing_secret: must be at least 16 characters')
    expect(() => parseConfig({ agents: { ca: 5 } }, 'bad.json')).toThrow(/ {2}agents\.ca: /)
    expect(parseConfig({ agents: { ca: '/ca.pem', cert: 'x' } }, 'unknown.json').unknownKeys).toEqual(['agents.cert'])
  })

  test('a reload renews the certificate from new paths at once, but turning TLS on or off waits for the next start', () => {
    const plain = parseConfig({}, 'plain.json').config
    const secure = parseConfig({ tls: TLS }, 'tls.json').config
    const moved = parseConfig(
      { tls: { cert: '/new/fullchain.pem', key: '/new/key.pem' }, signing_secret: 'a-new-secret-0123', agents: { ca: '/ca.pem' } },
      'moved.json',
    ).config

    expect(planReload(secure, moved)).toMatchObject({
      config: { tls: moved.tls, signing_secret: 'a-new-secret-0123', agents: { ca: '/ca.pem' } },
      atNextStart: [],
    })
    expect(planReload(plain, secure)).toMatchObject({ config: { tls: undefined }, atNextStart: ['tls'] })
    expect(planReload(secure, plain)).toMatchObject({ config: { tls: TLS }, atNextStart: ['tls'] })
  })
})
