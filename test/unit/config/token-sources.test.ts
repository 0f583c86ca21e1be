import { describe, expect, test } from 'bun:test'
import { mkdirSync, mkdtempSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, envTokens, loadConfig, MAX_TOKENS_FILE_BYTES, readConfigFile, readTokensFile } from '../../../src/config/config.ts'

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'mls-tokens-'))
}

function write(dir: string, name: string, text: string): string {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

describe('tokens_file', () => {
  test('one token per line: spaces trimmed, blank lines and # comments skipped, CRLF accepted', () => {
    const path = write(tempDir(), 'tokens', '# agents of team a\n  token-number-one  \n\r\ntoken-number-two\r\n\n# end\n')
    expect(readTokensFile(path)).toEqual(['token-number-one', 'token-number-two'])
  })

  test('an empty file holds no tokens', () => {
    expect(readTokensFile(write(tempDir(), 'tokens', ''))).toEqual([])
  })

  test('a bad line is named by its number, never by the token', () => {
    const path = write(tempDir(), 'tokens', 'token-number-one\nshort\ntoken-number-two\nsmall\n')
    const error = (() => {
      try {
        readTokensFile(path)
      } catch (caught) {
        return caught as Error
      }
      throw new Error('expected a ConfigError')
    })()
    expect(error).toBeInstanceOf(ConfigError)
    expect(error.message).toBe(`invalid tokens_file ${path}:\n  line 2: tokens must be at least 8 characters\n  line 4: tokens must be at least 8 characters`)
    expect(error.message).not.toContain('short')
  })

  test('a JSON array is refused with the format it should have', () => {
    const path = write(tempDir(), 'tokens', '["token-number-one", "token-number-two"]\n')
    expect(() => readTokensFile(path)).toThrow(new ConfigError(`tokens_file ${path} holds one token per line, not a JSON array`))
  })

  test('a missing file, or one larger than 1 MiB, is refused', () => {
    const dir = tempDir()
    expect(() => readTokensFile(join(dir, 'none'))).toThrow(/^cannot read tokens_file .*none/)
    const huge = write(dir, 'huge', '')
    truncateSync(huge, MAX_TOKENS_FILE_BYTES + 1)
    expect(() => readTokensFile(huge)).toThrow(`tokens_file ${huge} is too large (more than 1024 KiB)`)
  })

  test('named in a config, it is read relative to the config file, and its tokens come with the config', () => {
    const dir = tempDir()
    mkdirSync(join(dir, 'secrets'))
    write(dir, 'secrets/tokens', 'token-number-one\n')
    const path = write(dir, 'mls.json', JSON.stringify({ tokens_file: 'secrets/tokens' }))
    expect(readConfigFile(path).externalTokens).toEqual(['token-number-one'])
    // From another working directory too.
    expect(loadConfig({ explicitPath: path, env: {} }).externalTokens).toEqual(['token-number-one'])
  })

  test('a token of the file that an access entry restricts is refused: one grant per token', () => {
    const dir = tempDir()
    write(dir, 'tokens', 'token-number-one\n')
    const path = write(dir, 'mls.json', JSON.stringify({ tokens_file: 'tokens', access: [{ token: 'token-number-one', roles: ['agent'] }] }))
    expect(() => readConfigFile(path)).toThrow('access.0: this token is also granted by tokens_file')
  })
})

describe('MLS_TOKENS', () => {
  test('comma-separated, spaces trimmed, empty entries skipped', () => {
    expect(envTokens(' token-number-one, token-number-two ,,')).toEqual(['token-number-one', 'token-number-two'])
  })

  test('a bad entry is named by its position, never by the token', () => {
    expect(() => envTokens('token-number-one,tiny')).toThrow(new ConfigError('invalid MLS_TOKENS:\n  entry 2: tokens must be at least 8 characters'))
  })

  test('adds to the embedded default and to a file, after tokens_file', () => {
    const dir = tempDir()
    expect(loadConfig({ env: { MLS_TOKENS: 'token-from-env-1' }, cwd: dir, home: dir }).externalTokens).toEqual(['token-from-env-1'])
    write(dir, 'tokens', 'token-number-one\n')
    const path = write(dir, 'mls.json', JSON.stringify({ tokens_file: 'tokens' }))
    expect(loadConfig({ explicitPath: path, env: { MLS_TOKENS: 'token-from-env-1' } }).externalTokens).toEqual(['token-number-one', 'token-from-env-1'])
    expect(loadConfig({ explicitPath: path, env: { MLS_TOKENS: '' } }).externalTokens).toEqual(['token-number-one'])
  })

  test('a token an access entry restricts is refused', () => {
    const dir = tempDir()
    const path = write(dir, 'mls.json', JSON.stringify({ access: [{ token: 'token-from-env-1', roles: ['monitor'] }] }))
    expect(() => loadConfig({ explicitPath: path, env: { MLS_TOKENS: 'token-from-env-1' } })).toThrow('access.0: this token is also granted by MLS_TOKENS')
  })
})
