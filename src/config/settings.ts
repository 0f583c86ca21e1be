import type { HealthPolicy } from '../fleet/health.ts'
import { Regions } from '../fleet/regions.ts'
import { Access } from '../security/access.ts'
import { HeaderPolicy } from '../security/answer-headers.ts'
import type { AuthFailures } from '../security/auth-failures.ts'
import { Networks } from '../security/networks.ts'
import type { Config } from './config.ts'
import { randomToken } from './kept-token.ts'

/** The settings in force now; SIGHUP swaps the whole object's fields at once. */
export interface Settings {
  config: Config
  regions: Regions
  /** Every token's grant (src/security/access.ts): the one check behind every request and message that needs a token. */
  access: Access
  /** Which of an agent's answer headers reach the caller (answers.pass_headers). */
  headerPolicy: HeaderPolicy
  /** Where HTTP agents may be called besides their own source address (agents.allowed_networks). */
  allowedNetworks: Networks
  /** Whose X-Forwarded-For gives the source address (trusted_proxies). */
  trustedProxies: Networks
  /** Set when no token is configured anywhere (tokens, access, tokens_file, MLS_TOKENS): the server made one up rather than run open. */
  generatedToken?: string
}

/** What settings are built from besides the config: kept by the server across reloads. */
export interface SettingsSources {
  /** Tokens from tokens_file and MLS_TOKENS (LoadedConfig.externalTokens). */
  externalTokens: readonly string[]
  /** Failed authentications per address: they outlive a reload. */
  failures: AuthFailures
  /** The token to use when none is configured (serve: the one kept for the next start); called only then. A random one by default. */
  generatedToken?: () => string
}

/** Whether any token is configured (`tokens`, `access`, tokens_file, MLS_TOKENS): without one the server generates one rather than run open. */
export function configuresTokens(config: Config, externalTokens: readonly string[]): boolean {
  return config.tokens.length > 0 || config.access.length > 0 || externalTokens.length > 0
}

/** Builds the settings; with no token configured anywhere it takes `generatedToken()`. */
export function makeSettings(config: Config, sources: SettingsSources): Settings {
  const configured = [...config.tokens, ...sources.externalTokens]
  const token = configuresTokens(config, sources.externalTokens) ? undefined : (sources.generatedToken ?? randomToken)()
  const regions = new Regions(config.region_hierarchy)
  const access = new Access({
    everyRole: token === undefined ? configured : [token],
    entries: config.access,
    regions,
    failures: sources.failures,
    limits: { maxFailures: config.auth.max_failures, windowMs: config.auth.window * 1000 },
  })
  return {
    config,
    regions,
    access,
    headerPolicy: new HeaderPolicy(config.answers.pass_headers),
    allowedNetworks: Networks.parse(config.agents.allowed_networks),
    trustedProxies: Networks.parse(config.trusted_proxies),
    // Set even when undefined: a reload that configures tokens swaps the fields in place, and must clear it.
    generatedToken: token,
  }
}

/**
 * `build` of the config in force, built again only when a reload has swapped the config (each reload
 * brings a new object): settings read on every task cost one comparison, not an object per task.
 */
export function perConfig<T>(config: () => Config, build: (config: Config) => T): () => T {
  let builtFor: Config | undefined
  let built: T | undefined
  return () => {
    const current = config()
    if (current !== builtFor || built === undefined) {
      built = build(current)
      builtFor = current
    }
    return built
  }
}

export function healthPolicy(config: Config): HealthPolicy {
  return {
    failuresToEject: config.health.failures_to_eject,
    ejectionMs: config.health.ejection_time * 1000,
    maxEjectionMs: config.health.max_ejection_time * 1000,
    maxEjectedPercent: config.health.max_ejected_percent,
    slowStartMs: config.health.slow_start * 1000,
  }
}
