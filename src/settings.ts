import { HeaderPolicy } from './answer-headers.ts'
import type { Config } from './config.ts'
import type { HealthPolicy } from './health.ts'
import { Networks } from './networks.ts'
import { Regions } from './regions.ts'

/** The settings in force now; SIGHUP swaps the whole object's fields at once. */
export interface Settings {
  config: Config
  regions: Regions
  tokens: ReadonlySet<string>
  /** `Bearer <token>` for each token, as most callers send it: checked with one lookup, no parsing. */
  bearerHeaders: ReadonlySet<string>
  /** Which of an agent's answer headers reach the caller (answers.pass_headers). */
  headerPolicy: HeaderPolicy
  /** Where HTTP agents may be called besides their own source address (agents.allowed_networks). */
  allowedNetworks: Networks
  /** Whose X-Forwarded-For gives the source address (trusted_proxies). */
  trustedProxies: Networks
  /** Set when the config has no tokens: the server made one up rather than run open. */
  generatedToken?: string
}

/** Builds the settings; a config without tokens keeps `generatedToken` (or gets a new one). */
export function makeSettings(config: Config, generatedToken?: string): Settings {
  const token = config.tokens.length > 0 ? undefined : (generatedToken ?? randomToken())
  const tokens = token === undefined ? config.tokens : [token]
  return {
    config,
    regions: new Regions(config.region_hierarchy),
    headerPolicy: new HeaderPolicy(config.answers.pass_headers),
    allowedNetworks: Networks.parse(config.agents.allowed_networks),
    trustedProxies: Networks.parse(config.trusted_proxies),
    tokens: new Set(tokens),
    bearerHeaders: new Set(tokens.map((each) => `Bearer ${each}`)),
    ...(token === undefined ? {} : { generatedToken: token }),
  }
}

export function healthPolicy(config: Config): HealthPolicy {
  return {
    failuresToEject: config.health.failures_to_eject,
    ejectionMs: config.health.ejection_time * 1000,
    maxEjectionMs: config.health.max_ejection_time * 1000,
    maxEjectedPercent: config.health.max_ejected_percent,
  }
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24))
  return `mls_${Buffer.from(bytes).toString('base64url')}`
}
