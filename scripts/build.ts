/**
 * `npm run build` (and the release and image scripts): the compiled `moonlight` binary, carrying the
 * version from package.json and the git commit it was built from.
 */
import { join } from 'node:path'

export const ROOT = join(import.meta.dir, '..')

/**
 * The commit to embed: $MOONLIGHT_COMMIT when set (a build from a tarball can say where it came from),
 * else git's short hash with "-dirty" when tracked files differ from it, else "unknown" (not a checkout).
 */
export function buildCommit(env: Record<string, string | undefined> = process.env): string {
  if (env.MOONLIGHT_COMMIT) return env.MOONLIGHT_COMMIT
  const git = (args: string[]) => Bun.spawnSync(['git', ...args], { cwd: ROOT, stdout: 'pipe', stderr: 'ignore' })
  const head = git(['rev-parse', '--short=12', 'HEAD'])
  if (head.exitCode !== 0) return 'unknown'
  const dirty = git(['status', '--porcelain', '--untracked-files=no']).stdout.toString().trim() !== ''
  return `${head.stdout.toString().trim()}${dirty ? '-dirty' : ''}`
}

export interface BuildOptions {
  outfile: string
  /** A `bun build --target`, e.g. bun-linux-arm64; the host's platform without it. */
  target?: string
  commit?: string
}

/** Compiles src/cli.ts into one executable; throws with Bun's output when it fails. */
export function buildBinary({ outfile, target, commit = buildCommit() }: BuildOptions): void {
  const args = ['build', '--compile', '--minify', '--sourcemap', '--define', `MOONLIGHT_COMMIT=${JSON.stringify(commit)}`]
  if (target) args.push(`--target=${target}`)
  const build = Bun.spawnSync([process.execPath, ...args, 'src/cli.ts', '--outfile', outfile], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
  if (build.exitCode !== 0) throw new Error(`bun build ${target ?? ''} failed:\n${build.stdout.toString()}${build.stderr.toString()}`)
}

if (import.meta.main) {
  const outfile = join(ROOT, 'dist/moonlight')
  buildBinary({ outfile })
  console.log(`built ${outfile}`)
}
