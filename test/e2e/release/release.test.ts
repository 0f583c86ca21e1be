/**
 * `npm run release` (scripts/release.ts): a binary per platform, cross-compiled, and a SHA256SUMS that
 * `sha256sum --check` accepts. The one for this machine runs; each is checked by its ELF header.
 */
import { beforeAll, describe, expect, test } from 'bun:test'
import { closeSync, mkdtempSync, openSync, readdirSync, readSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkg from '../../../package.json' with { type: 'json' }
import sdk from '../../../packages/sdk/package.json' with { type: 'json' }
import { ROOT } from '../../support/helpers.ts'

const out = join(mkdtempSync(join(tmpdir(), 'mls-release-')), 'release')

/** e_machine of an ELF executable: 62 is x86-64, 183 is AArch64. */
function elfMachine(path: string): number {
  const head = Buffer.alloc(20)
  const fd = openSync(path, 'r')
  readSync(fd, head, 0, 20, 0)
  closeSync(fd)
  expect(head.subarray(0, 4).toString('latin1')).toBe('\x7fELF')
  return head.readUInt16LE(18)
}

beforeAll(() => {
  const release = Bun.spawnSync([process.execPath, join(ROOT, 'scripts/release.ts'), '--out', out], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
  if (release.exitCode !== 0) throw new Error(`scripts/release.ts failed:\n${release.stdout.toString()}${release.stderr.toString()}`)
}, 240_000)

describe('npm run release', () => {
  test("writes the linux x64 and arm64 binaries, the SDK's tarball and their SHA256SUMS, nothing else", () => {
    const tarball = `moonlight-sdk-${sdk.version}.tgz`
    expect(readdirSync(out).sort()).toEqual(['SHA256SUMS', 'moonlight-linux-arm64', 'moonlight-linux-x64', tarball])
    const check = Bun.spawnSync(['sha256sum', '--check', 'SHA256SUMS'], { cwd: out, stdout: 'pipe', stderr: 'pipe' })
    expect({ code: check.exitCode, output: check.stdout.toString() }).toEqual({
      code: 0,
      output: `moonlight-linux-arm64: OK\nmoonlight-linux-x64: OK\n${tarball}: OK\n`,
    })
    // What npm publish would upload: the built package with its licence.
    const listing = Bun.spawnSync(['tar', '-tzf', join(out, tarball)], { stdout: 'pipe' })
      .stdout.toString()
      .split('\n')
    expect(listing).toEqual(
      expect.arrayContaining(['package/LICENSE', 'package/README.md', 'package/package.json', 'package/dist/index.js', 'package/dist/index.d.ts']),
    )
  })

  test("each binary is built for its platform; this machine's says its version and commit", () => {
    expect(elfMachine(join(out, 'moonlight-linux-x64'))).toBe(62)
    expect(elfMachine(join(out, 'moonlight-linux-arm64'))).toBe(183)
    const version = Bun.spawnSync([join(out, `moonlight-linux-${process.arch}`), '--version'], { cwd: tmpdir(), stdout: 'pipe', stderr: 'pipe' })
    expect(version.exitCode).toBe(0)
    expect(version.stdout.toString()).toMatch(new RegExp(`^${pkg.version.replaceAll('.', '\\.')} \\(commit [0-9a-f]{12}(-dirty)?\\)\\n$`))
  })
})
