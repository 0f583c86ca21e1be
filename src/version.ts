import pkg from '../package.json' with { type: 'json' }

/** The release, embedded at build time (the compiled binary carries package.json's version). */
export const VERSION: string = pkg.version
