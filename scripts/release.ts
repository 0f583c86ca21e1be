/**
 * `npm run release`: dist/release/ with a `moonlight` binary per platform and their SHA256SUMS.
 * Bun cross-compiles: for another platform it fetches that platform's runtime from the npm registry.
 *
 *   bun scripts/release.ts [--out DIR]    (default dist/release)
 *
 * No musl (Alpine) builds: Bun's need Alpine's libstdc++ and libgcc beside musl, which cannot be
 * checked where this is built and tested; on Alpine, run the image or build with --target=bun-linux-x64-musl.
 */
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
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
  writeFileSync(join(out, 'SHA256SUMS'), checksums(out, names))
  console.log(`wrote ${out} (commit ${commit})`)
}
