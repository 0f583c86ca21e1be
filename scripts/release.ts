/**
 * `npm run release`: dist/release/ with a `moonlight` binary per platform, the SDK's npm tarball
 * (moonlight-sdk-<version>.tgz, installable before it is on the registry) and their SHA256SUMS.
 * Bun cross-compiles: for another platform it fetches that platform's runtime from the npm registry.
 *
 *   bun scripts/release.ts [--out DIR]    (default dist/release)
 *
 * No musl (Alpine) builds: Bun's need Alpine's libstdc++ and libgcc beside musl, which cannot be
 * checked where this is built and tested; on Alpine, run the image or build with --target=bun-linux-x64-musl.
 */
import { createHash } from 'node:crypto'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { buildBinary, buildCommit, ROOT } from './build.ts'

/** The file each platform's binary is published as, and Bun's target for it. */
export const RELEASE_TARGETS = {
  'moonlight-linux-x64': 'bun-linux-x64',
  'moonlight-linux-arm64': 'bun-linux-arm64',
} as const

/** SHA256SUMS as `sha256sum --check` reads it: the hex digest, two spaces, the file name. */
function checksums(dir: string, names: string[]): string {
  return names
    .map(
      (name) =>
        `${createHash('sha256')
          .update(readFileSync(join(dir, name)))
          .digest('hex')}  ${name}\n`,
    )
    .join('')
}

/**
 * The SDK's npm tarball in `out`, the file `npm publish` uploads (`npm publish moonlight-sdk-<version>.tgz`).
 * Built in a staged copy with the LICENSE beside it, so a release never writes into packages/sdk.
 */
function packSdk(out: string): string {
  const staged = mkdtempSync(join(tmpdir(), 'moonlight-sdk-'))
  try {
    for (const [from, to] of [
      ['packages/sdk/package.json', 'package.json'],
      ['packages/sdk/README.md', 'README.md'],
      ['LICENSE', 'LICENSE'],
    ] as const)
      copyFileSync(join(ROOT, from), join(staged, to))
    run([join(ROOT, 'node_modules/.bin/tsc'), '-p', join(ROOT, 'packages/sdk'), '--outDir', join(staged, 'dist')], ROOT)
    // --ignore-scripts: prepack's tsc has just run, into the staged copy.
    return run(['npm', 'pack', '--silent', '--ignore-scripts', '--pack-destination', out], staged).trim()
  } finally {
    rmSync(staged, { recursive: true, force: true })
  }
}

function run(command: string[], cwd: string): string {
  const result = Bun.spawnSync(command, { cwd, stdout: 'pipe', stderr: 'pipe' })
  if (result.exitCode !== 0) throw new Error(`${command.join(' ')} failed:\n${result.stdout.toString()}${result.stderr.toString()}`)
  return result.stdout.toString()
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { out: { type: 'string', default: join(ROOT, 'dist/release') } }, strict: true })
  const out = values.out
  rmSync(out, { recursive: true, force: true })
  mkdirSync(out, { recursive: true })
  const commit = buildCommit()
  const names = Object.keys(RELEASE_TARGETS).sort()
  for (const name of names) {
    buildBinary({ outfile: join(out, name), target: RELEASE_TARGETS[name as keyof typeof RELEASE_TARGETS], commit })
    console.log(`built ${name}`)
  }
  // --sourcemap leaves a .map beside each binary; what is published is the binaries.
  for (const file of readdirSync(out)) if (file.endsWith('.map')) rmSync(join(out, file))
  const tarball = packSdk(out)
  console.log(`packed ${tarball}`)
  writeFileSync(join(out, 'SHA256SUMS'), checksums(out, [...names, tarball]))
  console.log(`wrote ${out} (commit ${commit})`)
}
