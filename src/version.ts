import pkg from '../package.json' with { type: 'json' }

// Replaced by `bun build --define` (scripts/build.ts) with the commit the binary is built from.
declare const MOONLIGHT_COMMIT: string | undefined

/** The release, embedded at build time (the compiled binary carries package.json's version). */
export const VERSION: string = pkg.version

/** The git commit the binary was built from; "unknown" when running from the sources. */
export const COMMIT: string = typeof MOONLIGHT_COMMIT === 'string' ? MOONLIGHT_COMMIT : 'unknown'
