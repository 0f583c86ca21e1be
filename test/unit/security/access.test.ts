import { describe, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { type AccessEntry, ConfigError, parseConfig, SEED_HIERARCHY } from '../../../src/config/config.ts'
import { makeSettings } from '../../../src/config/settings.ts'
import { MoonlightError } from '../../../src/errors.ts'
import { Regions } from '../../../src/fleet/regions.ts'
import { Access, type Credential, findRegrant, type Role, tokenDigest } from '../../../src/security/access.ts'
import { AuthFailures } from '../../../src/security/auth-failures.ts'

const SEED_TOKEN = 'supersecrettokenox0'
const AGENT = 'agent-token-aaaa'
const SUBMIT = 'submit-token-bbbb'
const MONITOR = 'monitor-token-cccc'
const ADMIN = 'admin-token-dddd'
const HASHED = 'hashed-token-eeee'
const sha256 = (token: string) => createHash('sha256').update(token).digest('hex')

const ENTRIES: AccessEntry[] = [
  { token: AGENT, roles: ['agent'] },
  { token: SUBMIT, roles: ['submit'] },
  { token: MONITOR, roles: ['monitor'] },
  { token: ADMIN, roles: ['admin'] },
  { token_sha256: sha256(HASHED), roles: ['submit', 'monitor'] },
  { token: 'east-agent-ffff', roles: ['agent'], regions: ['usa'] },
  { token: 'east-submit-gggg', roles: ['submit'], regions: ['us-east-1', 'europe'] },
  { token: 'root-submit-hhhh', roles: ['submit'], regions: ['global'] },
]

function setup(limits = { maxFailures: 20, windowMs: 60_000 }) {
  let nowMs = 0
  const failures = new AuthFailures(() => nowMs)
  const access = new Access({ everyRole: [SEED_TOKEN], entries: ENTRIES, regions: new Regions(SEED_HIERARCHY), failures, limits })
  return {
    access,
    failures,
    advance: (ms: number) => {
      nowMs += ms
    },
  }
}

function credential(token: string, from: Credential['from'] = 'header', address = '10.0.0.1'): Credential {
  return { token, address: () => address, from }
}

/** What authorize answers: "ok", or the refusal's status and code. */
function outcome(access: Access, token: string, role: Role, region?: string): string {
  try {
    access.authorize(credential(token), role, region)
    return 'ok'
  } catch (error) {
    if (!(error instanceof MoonlightError)) throw error
    return `${error.status} ${error.code}`
  }
}

function refusal(run: () => unknown): MoonlightError {
  try {
    run()
  } catch (error) {
    if (error instanceof MoonlightError) return error
    throw error
  }
  throw new Error('expected a refusal')
}

const ROLES: Role[] = ['agent', 'submit', 'monitor', 'admin']

describe('roles', () => {
  test("a grant names its token's digest, the holder a client record keeps: for a plain token, one of every role and a token_sha256 entry alike", () => {
    const { access } = setup()
    expect(access.authorize(credential(AGENT), 'agent').holder).toBe(tokenDigest(AGENT))
    expect(access.authorize(credential(SEED_TOKEN), 'agent').holder).toBe(tokenDigest(SEED_TOKEN))
    expect(access.authorize(credential(HASHED), 'monitor').holder).toBe(tokenDigest(HASHED))
    expect(access.digestHolds(access.authorize(credential(AGENT), 'agent').holder, 'agent')).toBe(true)
  })

  test('each token holds its roles and no other; admin and the seed tokens hold every role', () => {
    const { access } = setup()
    const table = (token: string) => Object.fromEntries(ROLES.map((role) => [role, outcome(access, token, role)]))
    expect(table(AGENT)).toEqual({ agent: 'ok', submit: '403 forbidden', monitor: '403 forbidden', admin: '403 forbidden' })
    expect(table(SUBMIT)).toEqual({ agent: '403 forbidden', submit: 'ok', monitor: '403 forbidden', admin: '403 forbidden' })
    expect(table(MONITOR)).toEqual({ agent: '403 forbidden', submit: '403 forbidden', monitor: 'ok', admin: '403 forbidden' })
    expect(table(ADMIN)).toEqual({ agent: 'ok', submit: 'ok', monitor: 'ok', admin: 'ok' })
    expect(table(SEED_TOKEN)).toEqual({ agent: 'ok', submit: 'ok', monitor: 'ok', admin: 'ok' })
  })

  test('a token_sha256 entry accepts the token whose SHA-256 it names', () => {
    const { access } = setup()
    expect(outcome(access, HASHED, 'submit')).toBe('ok')
    expect(outcome(access, HASHED, 'monitor')).toBe('ok')
    expect(outcome(access, HASHED, 'agent')).toBe('403 forbidden')
    expect(outcome(access, sha256(HASHED), 'submit')).toBe('401 unauthorized')
  })

  test('the digest is the SHA-256 of the token as UTF-8, as sha256sum prints it', () => {
    expect(Buffer.from(tokenDigest('jeton-été-☃'), 'base64').toString('hex')).toBe(sha256('jeton-été-☃'))
  })

  test('a missing or unknown token is 401; the message says how to send one over HTTP, and names no token', () => {
    const { access } = setup()
    expect(outcome(access, '', 'submit')).toBe('401 unauthorized')
    const header = refusal(() => access.authorize(credential('wrong-token-zzzz'), 'submit'))
    expect(header.message).toContain('Authorization: Bearer <token>')
    const message = refusal(() => access.authorize(credential('wrong-token-zzzz', 'message'), 'agent'))
    expect(message.message).toBe('invalid token')
    expect(JSON.stringify([header.toJSON(), message.toJSON()])).not.toContain('wrong-token-zzzz')
  })

  test('a token without the role is 403 naming the role, never the token', () => {
    const { access } = setup()
    const error = refusal(() => access.authorize(credential(AGENT), 'submit'))
    expect(error.toJSON()).toEqual({ error: 'this token does not hold the "submit" role, needed to submit tasks', code: 'forbidden', role: 'submit' })
    for (const role of ['agent', 'monitor'] as const) {
      const body = JSON.stringify(refusal(() => access.authorize(credential(SUBMIT), role)).toJSON())
      expect(body).toContain(`"${role}"`)
      expect(body).not.toContain(SUBMIT)
    }
  })
})

describe('regions', () => {
  test('an agent token limited to a region may register there and anywhere under it, nowhere else', () => {
    const { access } = setup()
    expect(outcome(access, 'east-agent-ffff', 'agent', 'usa')).toBe('ok')
    expect(outcome(access, 'east-agent-ffff', 'agent', 'us-east-1')).toBe('ok')
    expect(outcome(access, 'east-agent-ffff', 'agent', 'us-west-1')).toBe('ok')
    expect(outcome(access, 'east-agent-ffff', 'agent', 'eu-west-1')).toBe('403 forbidden')
    expect(outcome(access, 'east-agent-ffff', 'agent', 'northamerica')).toBe('403 forbidden')
    // A region the hierarchy does not name hangs under global, so not under usa.
    expect(outcome(access, 'east-agent-ffff', 'agent', 'mars')).toBe('403 forbidden')
    const error = refusal(() => access.authorize(credential('east-agent-ffff'), 'agent', 'eu-west-1'))
    expect(error.toJSON()).toEqual({ error: 'this token may not register agents in region "eu-west-1"', code: 'forbidden', region: 'eu-west-1' })
  })

  test('a submit token limited to regions may send to each and under it; the root needs "global"', () => {
    const { access } = setup()
    expect(outcome(access, 'east-submit-gggg', 'submit', 'us-east-1')).toBe('ok')
    expect(outcome(access, 'east-submit-gggg', 'submit', 'europe')).toBe('ok')
    expect(outcome(access, 'east-submit-gggg', 'submit', 'eu-west-1')).toBe('ok')
    expect(outcome(access, 'east-submit-gggg', 'submit', 'usa')).toBe('403 forbidden')
    expect(outcome(access, 'east-submit-gggg', 'submit', 'global')).toBe('403 forbidden')
    expect(outcome(access, 'root-submit-hhhh', 'submit', 'global')).toBe('ok')
    expect(outcome(access, 'root-submit-hhhh', 'submit', 'eu-west-1')).toBe('ok')
    expect(outcome(access, 'root-submit-hhhh', 'submit', 'mars')).toBe('ok')
    const error = refusal(() => access.authorize(credential('east-submit-gggg'), 'submit', 'usa'))
    expect(error.toJSON()).toEqual({ error: 'this token may not send tasks to region "usa"', code: 'forbidden', region: 'usa' })
  })

  test('tokens without regions may act anywhere', () => {
    const { access } = setup()
    for (const region of ['global', 'us-east-1', 'mars']) {
      expect(outcome(access, SUBMIT, 'submit', region)).toBe('ok')
      expect(outcome(access, SEED_TOKEN, 'agent', region)).toBe('ok')
    }
  })
})

describe('failed authentication is throttled, valid tokens are not', () => {
  test('past max_failures an address gets 429 with Retry-After; a valid token from it still passes', () => {
    const { access, failures, advance } = setup({ maxFailures: 2, windowMs: 60_000 })
    expect(refusal(() => access.authorize(credential('wrong-1-aaaaaaa'), 'submit')).status).toBe(401)
    advance(15_000)
    expect(refusal(() => access.authorize(credential(''), 'submit')).status).toBe(401)
    const throttled = refusal(() => access.authorize(credential('wrong-2-aaaaaaa', 'message'), 'agent'))
    expect(throttled.status).toBe(429)
    expect(throttled.code).toBe('too_many_failures')
    expect(throttled.headers).toEqual({ 'retry-after': '45' })
    expect(throttled.details).toEqual({ retry_after: 45 })
    expect(outcome(access, SEED_TOKEN, 'submit')).toBe('ok')
    // A known token without the role is a 403, not a failed authentication.
    expect(outcome(access, AGENT, 'submit')).toBe('403 forbidden')
    // Another address is not held up.
    expect(refusal(() => access.authorize(credential('wrong-3-aaaaaaa', 'header', '10.0.0.2'), 'submit')).status).toBe(401)
    expect({ failures: failures.failures, throttled: failures.throttled }).toEqual({ failures: 4, throttled: 1 })
  })

  test('the address is looked up only when authentication fails', () => {
    const { access } = setup()
    let lookups = 0
    const asked = (token: string): Credential => ({ token, from: 'header', address: () => `10.0.0.${++lookups}` })
    access.authorize(asked(SEED_TOKEN), 'submit')
    expect(() => access.authorize(asked(AGENT), 'submit')).toThrow()
    expect(lookups).toBe(0)
    expect(() => access.authorize(asked('wrong-token-zzzz'), 'submit')).toThrow()
    expect(lookups).toBe(1)
  })
})

describe('access in the config', () => {
  const parse = (raw: unknown) => parseConfig(raw, 'test').config

  test('entries are checked: one of token and token_sha256, known roles, no unknown keys', () => {
    const problems = (entry: unknown) => {
      try {
        parse({ access: [entry] })
        return ''
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error
        return error.message
      }
    }
    expect(problems({ token: AGENT, roles: ['agent'], regions: ['usa'] })).toBe('')
    expect(problems({ token_sha256: sha256(HASHED).toUpperCase(), roles: ['monitor'] })).toBe('')
    expect(problems({ roles: ['agent'] })).toContain('access.0: give exactly one of "token" and "token_sha256"')
    expect(problems({ token: AGENT, token_sha256: sha256(AGENT), roles: ['agent'] })).toContain('give exactly one of')
    expect(problems({ token_sha256: 'abc', roles: ['agent'] })).toContain('access.0.token_sha256: must be the SHA-256 of the token as 64 hex digits')
    expect(problems({ token: 'short', roles: ['agent'] })).toContain('access.0.token: tokens must be at least 8 characters')
    expect(problems({ token: AGENT, roles: [] })).toContain('access.0.roles: name at least one role')
    expect(problems({ token: AGENT, roles: ['root'] })).toContain('access.0.roles.0')
    expect(problems({ token: AGENT, roles: ['agent'], regions: [] })).toContain('access.0.regions: name at least one region')
    // Misspelt, "region" would otherwise leave the token allowed everywhere.
    expect(problems({ token: AGENT, roles: ['agent'], region: ['usa'] })).toContain('access.0: Unrecognized key: "region"')
  })

  test('a token has one grant: the same token twice in access, or in access and tokens, is refused', () => {
    expect(() => parse({ tokens: [AGENT], access: [{ token: AGENT, roles: ['agent'] }] })).toThrow(
      'access.0: this token is also granted by tokens: give each token one grant',
    )
    expect(() =>
      parse({
        access: [
          { token: AGENT, roles: ['agent'] },
          { token_sha256: sha256(AGENT), roles: ['submit'] },
        ],
      }),
    ).toThrow('access.1: this token is also granted by access.0')
    expect(findRegrant([{ token: AGENT, roles: ['agent'] }], [SUBMIT], 'MLS_TOKENS')).toBeUndefined()
    expect(findRegrant([{ token: AGENT, roles: ['agent'] }], [AGENT], 'MLS_TOKENS')).toEqual({ entry: 0, elsewhere: 'MLS_TOKENS' })
  })

  test('auth limits default to 20 failures per 60 s', () => {
    expect(parse({}).auth).toEqual({ max_failures: 20, window: 60 })
    expect(() => parse({ auth: { max_failures: 0 } })).toThrow('auth.max_failures')
  })

  test('a token is generated only when none is configured anywhere', () => {
    const failures = new AuthFailures(() => 0)
    const sources = { externalTokens: [], failures }
    expect(makeSettings(parse({}), sources).generatedToken).toMatch(/^mls_/)
    expect(makeSettings(parse({ tokens: [SEED_TOKEN] }), sources).generatedToken).toBeUndefined()
    expect(makeSettings(parse({ access: [{ token_sha256: sha256(HASHED), roles: ['monitor'] }] }), sources).generatedToken).toBeUndefined()
    const fromFile = makeSettings(parse({}), { externalTokens: ['from-file-token-1'], failures })
    expect(fromFile.generatedToken).toBeUndefined()
    expect(fromFile.access.authorize(credential('from-file-token-1'), 'admin')).toBeDefined()
    const generated = makeSettings(parse({}), sources)
    expect(generated.access.authorize(credential(generated.generatedToken ?? ''), 'admin')).toBeDefined()
    // The server's own token (kept across reloads, or from the file of an earlier start) when it gives one; asked only when none is configured.
    const asked: string[] = []
    const given = () => {
      asked.push('asked')
      return 'mls_given-by-the-server'
    }
    expect(makeSettings(parse({}), { ...sources, generatedToken: given }).generatedToken).toBe('mls_given-by-the-server')
    expect(makeSettings(parse({ tokens: [SEED_TOKEN] }), { ...sources, generatedToken: given }).generatedToken).toBeUndefined()
    expect(makeSettings(parse({}), { externalTokens: ['from-file-token-1'], failures, generatedToken: given }).generatedToken).toBeUndefined()
    expect(asked).toEqual(['asked'])
  })
})

describe('docs/security.md', () => {
  test('the Roles and tokens example is a valid config, and its token_sha256 is that of the token it names', async () => {
    const page = await Bun.file(`${import.meta.dir}/../../../docs/security.md`).text()
    const section = page.slice(page.indexOf('## Roles and tokens'))
    const example = /```json\n([\s\S]*?)```/.exec(section)?.[1] ?? ''
    const { config } = parseConfig(JSON.parse(example), 'docs/security.md')
    expect(config.access.map((entry) => entry.roles)).toEqual([['agent'], ['submit'], ['submit', 'monitor']])
    const named = /the example's is that of `([^`]+)`/.exec(section)?.[1] ?? ''
    expect(config.access[2]?.token_sha256).toBe(sha256(named))
  })
})
