/**
 * A hostile pass on secrets other than tokens: `moonlight config check` shortens every token and hides
 * the Redis password, but must not print the other secrets of the config either — the signing secret
 * (whoever has it can forge calls every agent runs) and the tracing headers (an API key, "never logged").
 */
import { afterEach, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli } from '../../support/cli.ts'

const SIGNING_SECRET = 'agents-signing-secret-0123456789'
const OTLP_KEY = 'otlp-api-key-abcdef0123456789'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

function writeConfig(config: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'mls-hostile-secrets-'))
  dirs.push(dir)
  const path = join(dir, 'mls.json')
  writeFileSync(path, JSON.stringify(config))
  return path
}

describe('moonlight config check shows no secret of the config', () => {
  const config = {
    tokens: ['an-operator-token-0123'],
    signing_secret: SIGNING_SECRET,
    tracing: { endpoint: 'http://127.0.0.1:4318/v1/traces', headers: { authorization: `Bearer ${OTLP_KEY}` } },
  }

  test('the effective config printed does not hold signing_secret or the tracing headers in clear', async () => {
    const result = await runCli(['config', 'check', writeConfig(config)])
    expect(result.code).toBe(0)
    // Tokens are shortened, as they should be: the same must hold for the other secrets.
    expect(result.stdout).not.toContain('an-operator-token-0123')
    expect(result.stdout).not.toContain(SIGNING_SECRET)
    expect(result.stdout).not.toContain(OTLP_KEY)
  })

  test('nor does --json', async () => {
    const result = await runCli(['config', 'check', writeConfig(config), '--json'])
    expect(result.code).toBe(0)
    expect(result.stdout).not.toContain('an-operator-token-0123')
    expect(result.stdout).not.toContain(SIGNING_SECRET)
    expect(result.stdout).not.toContain(OTLP_KEY)
  })
})
