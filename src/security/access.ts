import type { AccessEntry, Role } from '../config/config.ts'
import { MoonlightError } from '../errors.ts'
import type { Regions } from '../fleet/regions.ts'
import type { AuthFailures, FailureLimits } from './auth-failures.ts'

export type { AccessEntry, Role } from '../config/config.ts'

/** What one token may do. */
export interface Grant {
  /** Bit set of ROLE_BITS; an admin token holds every bit. */
  readonly roles: number
  /** Where it may register agents and send tasks, each region with everything under it; undefined: everywhere. */
  readonly regions?: readonly string[]
  /**
   * The token's digest (tokenDigest), the key it was found by: what a client record keeps as its
   * holder. One string per token, shared by all its agents, instead of a digest computed (and held) per register.
   */
  readonly holder: string
}

/** A token as presented, and where from. */
export interface Credential {
  /** The presented token; '' when there was none. */
  token: string
  /** The peer's address, asked only when authentication fails: the usual request never looks it up. */
  address: () => string
  /** An HTTP `Authorization` header, or a token inside a body or message (heartbeat, register, monitor). */
  from: 'header' | 'message'
}

const ROLE_BITS: Record<Role, number> = { agent: 1, submit: 2, monitor: 4, admin: 8 }
const EVERY_ROLE = ROLE_BITS.agent | ROLE_BITS.submit | ROLE_BITS.monitor | ROLE_BITS.admin

/** What each role is for, as a refusal names it. */
const ROLE_PURPOSE: Record<Role, string> = {
  agent: 'register agents',
  submit: 'submit tasks',
  monitor: 'list clients and watch the monitor feed',
  admin: 'operator actions',
}

export interface AccessOptions {
  /** Tokens that mean every role: `tokens`, tokens_file, MLS_TOKENS and a generated token. */
  everyRole: readonly string[]
  /** The config's `access` entries. */
  entries: readonly AccessEntry[]
  regions: Regions
  /** Failed authentications per address; shared by every Access the server builds, so it outlives a reload. */
  failures: AuthFailures
  limits: FailureLimits
}

/**
 * Authentication and authorization, in one place: every token's grant, looked up by the SHA-256 of
 * the token. Pure (no I/O, no clock of its own); the failed-authentication window it feeds takes its
 * time from its own injected clock.
 */
export class Access {
  /**
   * Grants by the token's SHA-256 (base64). Why hash-then-Map rather than timingSafeEqual: the Map's
   * string comparison may stop at the first differing character, but what it compares is a digest,
   * whose characters a guesser cannot steer without breaking SHA-256, so its timing tells nothing
   * about any real token; and it stays one lookup however many tokens there are, where
   * timingSafeEqual would need a comparison per configured token. A `token_sha256` entry needs no
   * plaintext at all. Measured in Bun 1.4.5: about 0.2 µs a check, nearly all of it the hash.
   */
  private readonly grants = new Map<string, Grant>()
  private readonly regions: Regions
  private readonly failures: AuthFailures
  private readonly limits: FailureLimits

  constructor(options: AccessOptions) {
    this.regions = options.regions
    this.failures = options.failures
    this.limits = options.limits
    for (const token of options.everyRole) {
      const holder = tokenDigest(token)
      this.grants.set(holder, { roles: EVERY_ROLE, holder })
    }
    // The config refuses a token granted twice (findRegrant), so no entry overwrites another grant.
    for (const entry of options.entries) {
      const holder = entryDigest(entry)
      this.grants.set(holder, grantOf(entry, holder))
    }
  }

  /**
   * Whether the token of digest `holder` (tokenDigest: all a client record, a dashboard socket or a
   * stored task keeps of its token) still holds `role` (in `region`, when given): after a reload,
   * what a token since revoked or narrowed let in must not stay in.
   */
  digestHolds(holder: string, role: Role, region?: string): boolean {
    const grant = this.grants.get(holder)
    if (grant === undefined || !this.holds(grant, role)) return false
    const allowed = grant.regions
    return region === undefined || allowed === undefined || allowed.some((each) => this.regions.isWithin(region, each))
  }

  /**
   * The grant of `credential` if it holds `role` (and may act in `region`, when given). Throws 401
   * `unauthorized` for a missing or unknown token — or 429 `too_many_failures` once its address has
   * failed `auth.max_failures` times within `auth.window` — and 403 `forbidden` for a known token
   * without the role or the region. Only failures are counted: a valid token is never throttled.
   */
  authorize(credential: Credential, role: Role, region?: string): Grant {
    const grant = credential.token === '' ? undefined : this.grants.get(tokenDigest(credential.token))
    if (grant === undefined) throw this.failedAuthentication(credential)
    if ((grant.roles & ROLE_BITS[role]) === 0) {
      throw new MoonlightError(403, 'forbidden', `this token does not hold the "${role}" role, needed to ${ROLE_PURPOSE[role]}`, { role })
    }
    if (region !== undefined) this.requireRegion(grant, role, region)
    return grant
  }

  /** Whether `grant` holds `role` (e.g. monitor, which sees the details of agents' failures). */
  holds(grant: Grant | undefined, role: Role): boolean {
    return grant !== undefined && (grant.roles & ROLE_BITS[role]) !== 0
  }

  /**
   * The grant of a token sent where none is needed (what an optional token adds, e.g. the details a
   * monitor token sees). A token sent and unknown is a failed authentication all the same — else the
   * difference in the answer would be an unthrottled oracle for guessing tokens: counted, and 429
   * `too_many_failures` past the limit; within it, undefined, as if none had been sent.
   */
  optional(credential: Credential): Grant | undefined {
    if (credential.token === '') return undefined
    const grant = this.grants.get(tokenDigest(credential.token))
    if (grant !== undefined) return grant
    const failure = this.failedAuthentication(credential)
    if (failure.status === 429) throw failure
    return undefined
  }

  /**
   * Throws 403 `forbidden` unless `grant` may act in `region` (normalized: the root is "global"): a
   * region matches itself and everything under it, so a task for the root needs a token allowed "global".
   */
  requireRegion(grant: Grant, role: Role, region: string): void {
    const allowed = grant.regions
    if (allowed === undefined || allowed.some((each) => this.regions.isWithin(region, each))) return
    const action = role === 'agent' ? `register agents in region "${region}"` : `send tasks to region "${region}"`
    throw new MoonlightError(403, 'forbidden', `this token may not ${action}`, { region })
  }

  private failedAuthentication(credential: Credential): MoonlightError {
    const retryAfterS = this.failures.fail(credential.address(), this.limits)
    if (retryAfterS > 0) {
      const { maxFailures, windowMs } = this.limits
      return new MoonlightError(
        429,
        'too_many_failures',
        `too many failed authentications from this address (auth.max_failures = ${maxFailures} per ${windowMs / 1000} s); try again in ${retryAfterS} s`,
        { retry_after: retryAfterS },
        { 'retry-after': String(retryAfterS) },
      )
    }
    const message =
      credential.from === 'header' ? 'missing or invalid token: send "Authorization: Bearer <token>" with one of the configured tokens' : 'invalid token'
    return new MoonlightError(401, 'unauthorized', message)
  }
}

/**
 * A token's one identity: its SHA-256 as base64. The key of its grant, and all that a client record
 * (its holder), a dashboard socket or a stored task (its owner) keeps of the token.
 */
export function tokenDigest(token: string): string {
  return Bun.SHA256.hash(token, 'base64')
}

function entryDigest(entry: AccessEntry): string {
  return entry.token === undefined ? Buffer.from(entry.token_sha256 ?? '', 'hex').toString('base64') : tokenDigest(entry.token)
}

function grantOf(entry: AccessEntry, holder: string): Grant {
  const roles = entry.roles.includes('admin') ? EVERY_ROLE : entry.roles.reduce((bits, role) => bits | ROLE_BITS[role], 0)
  return entry.regions === undefined ? { roles, holder } : { roles, regions: entry.regions, holder }
}

/**
 * The first `access` entry whose token is granted elsewhere too — by an earlier entry, or as one of
 * `everyRole` (named `everyRoleSource`) — with where; undefined if none. A token has one grant: one
 * restricted in `access` and unrestricted in `tokens` would leave its holder more than intended.
 */
export function findRegrant(
  entries: readonly AccessEntry[],
  everyRole: readonly string[],
  everyRoleSource: string,
): { entry: number; elsewhere: string } | undefined {
  const unrestricted = new Set(everyRole.map(tokenDigest))
  const seen = new Map<string, number>()
  for (const [entry, each] of entries.entries()) {
    const digest = entryDigest(each)
    if (unrestricted.has(digest)) return { entry, elsewhere: everyRoleSource }
    const earlier = seen.get(digest)
    if (earlier !== undefined) return { entry, elsewhere: `access.${earlier}` }
    seen.set(digest, entry)
  }
  return undefined
}
