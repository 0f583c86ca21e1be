/**
 * `npm run image`: the container image moonlight:latest, built with podman or docker (whichever is
 * installed), FROM scratch: no base image can be pulled where this is built, and the compiled binary
 * needs only the C library. The image holds the binary, the shared libraries `ldd` lists for it
 * (copied from this machine), a non-root user, /etc/moonlight for the config, and a HEALTHCHECK that
 * runs `moonlight healthcheck` (there is no shell or curl in it).
 *
 *   bun scripts/image.ts [--tag NAME] [--binary PATH]
 *   --tag NAME     the image's name (default moonlight:latest)
 *   --binary PATH  a binary already built by `npm run build`, instead of building one now
 */
import { chmodSync, copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import pkg from '../package.json' with { type: 'json' }
import { buildBinary, buildCommit, ROOT } from './build.ts'

/** Not root, and no user of the host's: 65532 is the "nonroot" user distroless images use. */
const USER_ID = 65532
const BINARY_IN_IMAGE = '/usr/local/bin/moonlight'

/** The shared libraries (and the loader) a dynamically linked executable needs, as `ldd` resolves them here. */
export function sharedLibraries(binary: string): string[] {
  const ldd = Bun.spawnSync(['ldd', binary], { stdout: 'pipe', stderr: 'pipe' })
  if (ldd.exitCode !== 0) throw new Error(`ldd ${binary} failed: ${ldd.stderr.toString().trim()}`)
  // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no path.
  return [...ldd.stdout.toString().matchAll(/(?:=>\s*|^\s*)(\/\S+)\s+\(0x[0-9a-f]+\)/gm)].map((match) => match[1]!)
}

/** The Dockerfile; `commit` and the version become OCI labels. */
export function containerfile(commit: string): string {
  return `# Written by scripts/image.ts (npm run image).
FROM scratch
COPY rootfs/ /
LABEL org.opencontainers.image.title="moonlight" \\
      org.opencontainers.image.description="${pkg.description}" \\
      org.opencontainers.image.version="${pkg.version}" \\
      org.opencontainers.image.revision="${commit}" \\
      org.opencontainers.image.licenses="MIT"
ENV NODE_ENV=production
USER ${USER_ID}:${USER_ID}
EXPOSE 8080
# serve reads /etc/moonlight/mls.json when no --config is given: mount the config directory there.
# The probe asks $MLS_SERVER (default http://localhost:8080): set it when serving on another port.
HEALTHCHECK --interval=15s --timeout=10s --start-period=10s --retries=3 CMD ["${BINARY_IN_IMAGE}", "healthcheck"]
ENTRYPOINT ["${BINARY_IN_IMAGE}"]
CMD ["serve"]
`
}

/** Writes the build context: the Dockerfile and rootfs/ with the binary, its libraries and the user. */
export function writeContext(dir: string, binary: string, commit: string): void {
  rmSync(dir, { recursive: true, force: true })
  const rootfs = join(dir, 'rootfs')
  const place = (path: string, from: string) => {
    mkdirSync(dirname(join(rootfs, path)), { recursive: true })
    // copyFileSync follows symlinks (ld-linux is one): the image gets the file itself.
    copyFileSync(from, join(rootfs, path))
  }
  place(BINARY_IN_IMAGE, binary)
  chmodSync(join(rootfs, BINARY_IN_IMAGE), 0o755)
  for (const library of sharedLibraries(binary)) place(library, library)
  mkdirSync(join(rootfs, 'etc/moonlight'), { recursive: true })
  writeFileSync(join(rootfs, 'etc/passwd'), `root:x:0:0:root:/root:/sbin/nologin\nmoonlight:x:${USER_ID}:${USER_ID}:moonlight:/:/sbin/nologin\n`)
  writeFileSync(join(rootfs, 'etc/group'), `root:x:0:\nmoonlight:x:${USER_ID}:\n`)
  // Somewhere writable for the non-root user (a --handler's temporary files, say).
  mkdirSync(join(rootfs, 'tmp'))
  chmodSync(join(rootfs, 'tmp'), 0o1777)
  writeFileSync(join(dir, 'Dockerfile'), containerfile(commit))
}

/** podman when installed, else docker. */
function containerEngine(): { engine: string; formatArgs: string[] } {
  const podman = Bun.which('podman')
  // podman writes OCI images by default, and the OCI format has no HEALTHCHECK: ask for Docker's.
  if (podman) return { engine: podman, formatArgs: ['--format', 'docker'] }
  const docker = Bun.which('docker')
  if (docker) return { engine: docker, formatArgs: [] }
  throw new Error('neither podman nor docker is installed (Debian: apt-get install podman)')
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { tag: { type: 'string', default: 'moonlight:latest' }, binary: { type: 'string' } }, strict: true })
  const commit = buildCommit()
  let binary = values.binary
  if (!binary) {
    binary = join(ROOT, 'dist/moonlight')
    buildBinary({ outfile: binary, commit })
  }
  const context = join(ROOT, 'dist/image')
  writeContext(context, binary, commit)
  const { engine, formatArgs } = containerEngine()
  const build = Bun.spawnSync([engine, 'build', ...formatArgs, '--tag', values.tag, context], { stdout: 'inherit', stderr: 'inherit' })
  if (build.exitCode !== 0) process.exit(build.exitCode ?? 1)
  console.log(`built ${values.tag} with ${engine}`)
}
