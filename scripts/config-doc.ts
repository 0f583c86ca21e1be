/** `npm run docs:config`: writes docs/configuration.md from the config schema (src/config/reference.ts). */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { configurationReference } from '../src/config/reference.ts'

const page = join(import.meta.dir, '..', 'docs', 'configuration.md')
writeFileSync(page, configurationReference())
console.log(`wrote ${page}`)
