/** Another commit's server, unpacked beside this checkout, for a before/after measurement (run.ts --before, paired.ts). */
import { mkdirSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'

/** Unpacks what the server needs of `ref` (its sources, pages and package files) into `root`, sharing this checkout's node_modules; returns `root`. */
export function checkoutAt(ref: string, root: string): string {
  mkdirSync(root, { recursive: true })
  const repo = join(import.meta.dir, '..', '..')
  // Since issue 16 the server's agent command runs on the SDK's sources (packages/sdk): included where the commit has them.
  const hasSdk = Bun.spawnSync(['git', '-C', repo, 'cat-file', '-e', `${ref}:packages/sdk`]).exitCode === 0
  const paths = ['src', 'public', 'package.json', 'tsconfig.json', ...(hasSdk ? ['packages/sdk'] : [])]
  const archive = Bun.spawnSync(['git', '-C', repo, 'archive', '--format=tar', ref, ...paths], {
    stdout: 'pipe',
    stderr: 'pipe',
  })
  if (archive.exitCode !== 0) throw new Error(`cannot read ${ref} from git: ${archive.stderr.toString().trim()}`)
  const untar = Bun.spawnSync(['tar', '-x', '-C', root], { stdin: archive.stdout, stderr: 'pipe' })
  if (untar.exitCode !== 0) throw new Error(`cannot unpack ${ref}: ${untar.stderr.toString().trim()}`)
  symlinkSync(join(repo, 'node_modules'), join(root, 'node_modules'))
  return root
}
