import { describe, expect, test } from 'bun:test'
import { mkdirSync, mkdtempSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, configCandidates, loadConfig, parseConfig, readConfigFile, SEED_HIERARCHY } from '../../../src/config/config.ts'
import { SEED_CONFIG } from '../../support/helpers.ts'

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'mls-config-'))
}

/** `depth` regions in a line under global: r0's parent is global, r1's is r0, and so on. */
function chain(depth: number): Record<string, string> {
  const hierarchy: Record<string, string> = {}
  for (let i = 0; i < depth; i++) hierarchy[`r${i}`] = i === 0 ? 'global' : `r${i - 1}`
  return hierarchy
}

const SIXTEEN_MIB = 16 * 1024 * 1024

describe('config', () => {
  test("the seed's example loads verbatim, note included, with nothing unknown", () => {
    const { config, unknownKeys } = parseConfig(SEED_CONFIG, 'seed')
    expect(unknownKeys).toEqual([])
    expect(config.note).toBe('This is an example config. Copy it to /etc/moonlight/mls.json')
    expect(config.tokens).toEqual(['supersecrettokenox0', 'supersecrettokenox1'])
    expect(config.ws).toEqual({ ...SEED_CONFIG.ws, register_timeout: 10, max_unregistered: 100, allowed_origins: [], payload_format: 'object' })
    expect(config.region_hierarchy).toEqual(SEED_HIERARCHY)
  })

  test('mls.json.example at the top level is the seed example and loads', async () => {
    const example = await Bun.file(join(import.meta.dir, '../../../mls.json.example')).json()
    expect(example).toEqual(SEED_CONFIG)
    expect(parseConfig(example, 'mls.json.example').config.port).toBe(8080)
  })

  test('keys beyond the seed have documented defaults', () => {
    const { config } = parseConfig({}, 'empty')
    expect(config).toMatchObject({
      host: '0.0.0.0',
      port: 8080,
      retry_count: 3,
      task_timeout: 30,
      max_body_bytes: 1024 * 1024,
      oversized_body: { discard_bytes: 64 * 1024 * 1024, discard_time: 30 },
      max_answer_bytes: 16 * 1024 * 1024,
      require_task_token: true,
      client_ttl: 90,
      tokens: [],
      health: { failures_to_eject: 3, ejection_time: 30, max_ejection_time: 300, max_ejected_percent: 50 },
      ws: {
        enabled: true,
        path: '/ws',
        max_connections: 1000,
        read_timeout: 300,
        write_timeout: 30,
        heartbeat_interval: 30,
        connection_check_interval: 60,
        register_timeout: 10,
        max_unregistered: 100,
      },
      html: { enabled: true, static_path: '/static', index_path: '/', dashboard_path: '/dashboard' },
    })
  })

  test('a bad value names the key and the problem', () => {
    expect(() => parseConfig({ port: 'eighty', ws: { read_timeout: -1 } }, 'bad.json')).toThrow(ConfigError)
    try {
      parseConfig({ port: 'eighty', ws: { read_timeout: -1 } }, 'bad.json')
    } catch (error) {
      const message = (error as Error).message
      expect(message).toContain('bad.json')
      expect(message).toMatch(/port: .*number/i)
      expect(message).toMatch(/ws\.read_timeout: /)
    }
  })

  test('ws.max_unregistered defaults to a tenth of max_connections, at least 1, and below it when it can be', () => {
    const defaultFor = (max_connections: number) => parseConfig({ ws: { max_connections } }, 'ws').config.ws.max_unregistered
    expect([1000, 25, 19, 10, 2, 1].map(defaultFor)).toEqual([100, 2, 1, 1, 1, 1])
    expect(parseConfig({ ws: { max_connections: 10, max_unregistered: 9 } }, 'ws').config.ws.max_unregistered).toBe(9)
    // One connection in all: the agent that takes it is unregistered until it registers, so it must be allowed.
    expect(parseConfig({ ws: { max_connections: 1, max_unregistered: 1 } }, 'ws').config.ws.max_unregistered).toBe(1)
  })

  test('ws.max_unregistered must leave room for registered agents; both new ws keys must be positive', () => {
    expect(() => parseConfig({ ws: { max_connections: 10, max_unregistered: 10 } }, 'full.json')).toThrow(
      /ws\.max_unregistered: must be below ws\.max_connections \(10\), so that registered agents always find room/,
    )
    expect(() => parseConfig({ ws: { max_unregistered: 2000 } }, 'over.json')).toThrow(/ws\.max_unregistered: must be below ws\.max_connections \(1000\)/)
    expect(() => parseConfig({ ws: { max_connections: 1, max_unregistered: 2 } }, 'one.json')).toThrow(
      /ws\.max_unregistered: must be 1 when ws\.max_connections is 1/,
    )
    for (const max_unregistered of [0, -1, 1.5, '3']) expect(() => parseConfig({ ws: { max_unregistered } }, 'bad.json')).toThrow(/ws\.max_unregistered: /)
    for (const register_timeout of [0, -1, 'soon']) expect(() => parseConfig({ ws: { register_timeout } }, 'bad.json')).toThrow(/ws\.register_timeout: /)
    expect(parseConfig({ ws: { register_timeout: 0.3 } }, 'fraction.json').config.ws.register_timeout).toBe(0.3)
  })

  test('a cycle in the hierarchy is rejected', () => {
    expect(() => parseConfig({ region_hierarchy: { a: 'b', b: 'a' } }, 'cycle.json')).toThrow(/cycle in the hierarchy/)
    expect(() => parseConfig({ region_hierarchy: { global: 'x' } }, 'root.json')).toThrow(/root/)
  })

  test('a 10 000-deep chain validates, and a cycle at the end of a 10 000-long chain is still reported in full', () => {
    expect(parseConfig({ region_hierarchy: chain(10_000) }, 'deep.json').config.region_hierarchy.r9999).toBe('r9998')
    // c0 -> c1 -> ... -> c9999 -> c9998: only the last two form the cycle; the message shows the whole walk, as before.
    const looping: Record<string, string> = {}
    for (let i = 0; i < 10_000; i++) looping[`c${i}`] = i === 9_999 ? 'c9998' : `c${i + 1}`
    const walk = [...Array.from({ length: 10_000 }, (_, i) => `c${i}`), 'c9998'].join(' -> ')
    expect(() => parseConfig({ region_hierarchy: { ...chain(10_000), ...looping } }, 'loop.json')).toThrow(
      `  region_hierarchy.c0: cycle in the hierarchy: ${walk}`,
    )
  })

  // The quadratic check took about 150 s on a 50 000-deep chain (20 s on 20 000) on the 2-core dev box; a linear one takes milliseconds.
  test(
    'a 50 000-deep chain validates well inside the per-test timeout',
    () => {
      expect(Object.keys(parseConfig({ region_hierarchy: chain(50_000) }, 'deeper.json').config.region_hierarchy)).toHaveLength(50_000)
    },
    { timeout: 15_000 },
  )

  test('region names that are members of Object.prototype are ordinary names', () => {
    expect(parseConfig({ region_hierarchy: { a: 'toString', b: 'constructor' } }, 'names.json').config.region_hierarchy).toEqual({
      a: 'toString',
      b: 'constructor',
    })
    expect(() => parseConfig({ region_hierarchy: { toString: 'constructor', constructor: 'toString' } }, 'names.json')).toThrow(
      'cycle in the hierarchy: toString -> constructor -> toString',
    )
  })

  test('"__proto__" is refused as a region name, as a key and as a parent, in the words agents get', () => {
    // JSON.parse makes "__proto__" an own key, as a config file would; an object literal would set the prototype instead.
    const asKey = JSON.parse('{ "region_hierarchy": { "__proto__": "global", "usa": "global" } }')
    expect(() => parseConfig(asKey, 'proto.json')).toThrow('  region_hierarchy.__proto__: "__proto__" cannot be a node id or a region name')
    const asParent = JSON.parse('{ "region_hierarchy": { "usa": "__proto__" } }')
    expect(() => parseConfig(asParent, 'proto.json')).toThrow('  region_hierarchy.usa: "__proto__" cannot be a node id or a region name')
  })

  test('unknown keys are reported as warnings, not errors', () => {
    const { unknownKeys } = parseConfig({ ...SEED_CONFIG, colour: 'blue', ws: { ...SEED_CONFIG.ws, speed: 3 } }, 'extra')
    expect(unknownKeys.sort()).toEqual(['colour', 'ws.speed'])
  })

  test('search order: --config, MLS_CONFIG, ./mls.json, ~/.config/moonlight, /etc/moonlight', () => {
    expect(configCandidates({ explicitPath: '/x.json', env: { MLS_CONFIG: '/y.json' }, cwd: '/cwd', home: '/home/u' })).toEqual([
      '/x.json',
      '/y.json',
      '/cwd/mls.json',
      '/home/u/.config/moonlight/mls.json',
      '/etc/moonlight/mls.json',
    ])
  })

  test('./mls.json wins over the home config, and without any file the embedded default is used', () => {
    const cwd = tempDir()
    const home = tempDir()
    mkdirSync(join(home, '.config/moonlight'), { recursive: true })
    writeFileSync(join(home, '.config/moonlight/mls.json'), JSON.stringify({ port: 9001 }))
    expect(loadConfig({ env: {}, cwd, home })).toMatchObject({ source: join(home, '.config/moonlight/mls.json'), config: { port: 9001 } })
    writeFileSync(join(cwd, 'mls.json'), JSON.stringify({ port: 9002 }))
    expect(loadConfig({ env: {}, cwd, home })).toMatchObject({ source: join(cwd, 'mls.json'), config: { port: 9002 } })
    const empty = loadConfig({ env: {}, cwd: tempDir(), home: tempDir() })
    // /etc/moonlight/mls.json may exist on a developer's machine; CI's has none.
    if (empty.source === 'embedded default') expect(empty.config.region_hierarchy).toEqual(SEED_HIERARCHY)
    else expect(empty.source).toBe('/etc/moonlight/mls.json')
  })

  test('a named file that is missing or not JSON is an error, not a silent fallback', () => {
    expect(() => loadConfig({ explicitPath: '/nonexistent/mls.json', env: {} })).toThrow(/cannot read config/)
    const dir = tempDir()
    writeFileSync(join(dir, 'broken.json'), '{ "port": ')
    expect(() => loadConfig({ env: { MLS_CONFIG: join(dir, 'broken.json') } })).toThrow(/not valid JSON/)
  })

  test('a file of 16 MiB loads; one byte more is refused as too large', () => {
    const dir = tempDir()
    const atLimit = join(dir, 'at-limit.json')
    // Valid JSON of exactly the limit: "{}" padded with spaces.
    writeFileSync(atLimit, `{}${' '.repeat(SIXTEEN_MIB - 2)}`)
    expect(readConfigFile(atLimit).source).toBe(atLimit)
    const sparse = join(dir, 'huge.json')
    writeFileSync(sparse, '{}')
    truncateSync(sparse, SIXTEEN_MIB + 1)
    expect(() => readConfigFile(sparse)).toThrow(new ConfigError(`config ${sparse} is too large (more than 16 MiB)`))
    expect(() => readConfigFile(`${atLimit}.missing`)).toThrow(/cannot read config/)
  })

  test('an endless file (/dev/zero) is refused, not read forever', () => {
    expect(() => readConfigFile('/dev/zero')).toThrow(new ConfigError('config /dev/zero is too large (more than 16 MiB)'))
  })
})
