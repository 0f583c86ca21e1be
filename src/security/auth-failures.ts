/** How many failed authentications an address may make in a sliding window (`auth.max_failures` per `auth.window`). */
export interface FailureLimits {
  maxFailures: number
  windowMs: number
}

/**
 * Addresses tracked at most. Past it, new addresses share one slot: a guesser spreading its tries over
 * many addresses is throttled as one, and since only failures are throttled, nobody with a valid
 * token is held up by it. Each tracked address costs at most `max_failures` timestamps.
 */
export const MAX_TRACKED_ADDRESSES = 10_000

/**
 * Failed authentications per source address in a sliding window, so that guessing tokens is slow.
 * Pure: time comes from `now` (monotonic ms), and nothing here answers a request — `fail` says whether
 * this failure is past the limit and how long until the window frees a slot.
 */
export class AuthFailures {
  /** Every failed authentication counted, throttled ones included. */
  failures = 0
  /** Failed authentications answered "too many failures" (429, or that error frame). */
  throttled = 0
  /** Each address's failures still in the window, oldest first. Map order is the order of their latest failure, oldest first. */
  private readonly byAddress = new Map<string, number[]>()
  /** The slot new addresses share once MAX_TRACKED_ADDRESSES are tracked. */
  private readonly overflow: number[] = []

  constructor(
    private readonly now: () => number,
    private readonly maxTracked = MAX_TRACKED_ADDRESSES,
  ) {}

  /** Addresses with failures in the window (the shared overflow slot not included). */
  get tracked(): number {
    return this.byAddress.size
  }

  /**
   * Counts one failed authentication from `address`: 0 while the address is within its limit, else the
   * whole seconds until the window frees a slot (the Retry-After). A throttled failure does not enter
   * the window, so that Retry-After holds however often the address keeps trying.
   */
  fail(address: string, limits: FailureLimits): number {
    const nowMs = this.now()
    this.failures++
    const since = nowMs - limits.windowMs
    this.forgetBefore(since)
    const key = addressKey(address)
    const times = this.byAddress.get(key) ?? (this.byAddress.size < this.maxTracked ? [] : this.overflow)
    dropBefore(times, since)
    if (times.length >= limits.maxFailures) {
      this.throttled++
      // The window frees a slot once all but maxFailures - 1 of these have left it.
      const freesAtMs = times[times.length - limits.maxFailures]! + limits.windowMs
      return Math.max(1, Math.ceil((freesAtMs - nowMs) / 1000))
    }
    times.push(nowMs)
    if (times !== this.overflow) {
      // Re-inserted, so the Map stays ordered by latest failure and forgetBefore stops at the first live address.
      this.byAddress.delete(key)
      this.byAddress.set(key, times)
    }
    return 0
  }

  /** Forgets addresses whose latest failure left the window: amortized O(1), each address is forgotten once. */
  private forgetBefore(since: number): void {
    for (const [key, times] of this.byAddress) {
      if (times[times.length - 1]! > since) break
      this.byAddress.delete(key)
    }
  }
}

function dropBefore(times: number[], since: number): void {
  let expired = 0
  while (expired < times.length && times[expired]! <= since) expired++
  if (expired > 0) times.splice(0, expired)
}

/**
 * The key an address is counted under: an IPv4 address as it is, an IPv6 address by its /64 network
 * (one host is usually handed a whole /64, so counting single IPv6 addresses would let it guess
 * without limit), an IPv4-mapped IPv6 address as the IPv4 address it maps.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)
  if (mapped) return mapped[1]!
  if (!address.includes(':')) return address
  const [head = '', tail] = address.replace(/%.*$/, '').toLowerCase().split('::', 2)
  const groups = (part: string) => (part === '' ? [] : part.split(':'))
  const front = groups(head)
  // A tail ending in dotted IPv4 (64:ff9b::192.0.2.1) holds two groups in it.
  const back = tail === undefined ? [] : groups(tail).flatMap((group) => (group.includes('.') ? ['0', '0'] : [group]))
  const all = [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill('0'), ...back]
  return `${all
    .slice(0, 4)
    .map((group) => (Number.parseInt(group, 16) || 0).toString(16))
    .join(':')}::/64`
}
