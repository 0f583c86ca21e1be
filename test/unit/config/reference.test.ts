/** docs/configuration.md is generated from the config schema (src/config/reference.ts): the checked-in page must be what it renders. */
import { describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { configSchema, parseConfig } from '../../../src/config/config.ts'
import { configurationReference } from '../../../src/config/reference.ts'
import { ROOT } from '../../support/helpers.ts'

describe('the configuration reference', () => {
  test('docs/configuration.md is what the schema renders (else: run npm run docs:config)', () => {
    const checkedIn = readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8')
    expect({ page: 'docs/configuration.md', upToDate: checkedIn === configurationReference(), fix: 'npm run docs:config' }).toEqual({
      page: 'docs/configuration.md',
      upToDate: true,
      fix: 'npm run docs:config',
    })
  })

  test('has a row with a description for every key, nested ones by their dotted path', () => {
    const page = configurationReference()
    const rows = page.split('\n').filter((line) => line.startsWith('| `'))
    const paths = rows.map((row) => /^\| `([^`]+)`/.exec(row)?.[1])
    for (const name of Object.keys(configSchema.shape))
      expect({ name, row: paths.some((path) => path === name || path?.startsWith(`${name}.`)) }).toEqual({ name, row: true })
    for (const path of ['ws.register_timeout', 'routing.retry_budget.percent', 'cluster.redis_url', 'tls.cert', 'access[].token_sha256', 'queue.promote_after'])
      expect(paths).toContain(path)
    // Every row's last cell (the description) says something.
    for (const row of rows) expect(row.split(' | ').at(-1)!.replace(/ \|$/, '').length).toBeGreaterThan(5)
  })

  test('shows the defaults the server really applies', () => {
    const rowOf = (path: string) =>
      configurationReference()
        .split('\n')
        .find((line) => line.startsWith(`| \`${path}\` |`)) ?? ''
    expect(rowOf('port')).toContain('| `8080` |')
    expect(rowOf('ws.path')).toContain('| `"/ws"` |')
    expect(rowOf('ws.max_unregistered')).toContain('| `100` |')
    expect(rowOf('access')).toContain('| `[]` |')
    expect(rowOf('cluster.redis_url')).toContain('| required |')
    expect(rowOf('signing_secret')).toContain('| – |')
  })
})

describe("the README's minimal config", () => {
  test('is a valid config with the tokens and hierarchy it shows', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const section = readme.slice(readme.indexOf('\n## A minimal config\n'))
    const example = /```json\n([\s\S]*?)```/.exec(section)?.[1] ?? ''
    const { config } = parseConfig(JSON.parse(example), 'README')
    expect(config.tokens).toHaveLength(1)
    expect(config.region_hierarchy).toMatchObject({ 'us-east-1': 'usa', 'eu-west-1': 'europe' })
  })
})
