/**
 * deploy/moonlight.service: systemd's own checker accepts it (no unknown keys, a runnable command),
 * and it has what docs/operations.md promises: reload by SIGHUP, restart on failure, the hardening.
 */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BINARY } from '../../support/cli.ts'
import { ensureCommand } from '../../support/debian-packages.ts'
import { ROOT } from '../../support/helpers.ts'

const UNIT = readFileSync(join(ROOT, 'deploy/moonlight.service'), 'utf8')

/** The unit as systemd-analyze verify sees it, with ExecStart pointed at `binary` (verify checks it is executable). */
function verify(unit: string, binary: string): { code: number; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'mls-unit-'))
  const file = join(dir, 'moonlight.service')
  writeFileSync(file, unit.replaceAll('/usr/local/bin/moonlight', binary))
  const run = Bun.spawnSync([ensureCommand('systemd-analyze', 'systemd', 'to verify deploy/moonlight.service'), 'verify', file], {
    stdout: 'pipe',
    stderr: 'pipe',
  })
  return { code: run.exitCode, output: `${run.stdout.toString()}${run.stderr.toString()}`.trim() }
}

describe('deploy/moonlight.service', () => {
  test('systemd-analyze verify accepts it without a word', { timeout: 300_000 }, () => {
    expect(verify(UNIT, BINARY)).toEqual({ code: 0, output: '' })
  })

  test('the check can fail: a misspelt key and a missing binary are reported', () => {
    expect(verify(UNIT.replace('ProtectSystem=', 'ProtectSytem='), BINARY).output).toContain("Unknown key 'ProtectSytem'")
    expect(verify(UNIT, '/nonexistent/moonlight').code).not.toBe(0)
  })

  test('reloads with SIGHUP, restarts on failure, reads /etc/moonlight/mls.json, and is hardened', () => {
    const settings = new Map(
      UNIT.split('\n')
        .filter((line) => /^[A-Za-z]+=/.test(line))
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    )
    expect(settings.get('ExecStart')).toBe('/usr/local/bin/moonlight serve --config /etc/moonlight/mls.json')
    expect(settings.get('ExecReload')).toBe('/bin/kill -HUP $MAINPID')
    expect(settings.get('Restart')).toBe('on-failure')
    for (const [key, value] of [
      ['DynamicUser', 'yes'],
      ['ProtectSystem', 'strict'],
      ['NoNewPrivileges', 'yes'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['CapabilityBoundingSet', ''],
    ]) {
      expect({ key, value: settings.get(key!) }).toEqual({ key, value })
    }
  })
})
