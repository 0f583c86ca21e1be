import { isIP } from 'node:net'
import { type Networks, normalizeIp } from './networks.ts'

/**
 * The address a request came from. When the TCP peer is one of `trusted_proxies`, the
 * X-Forwarded-For entries it appended are believed, right to left, up to the first address that is
 * not itself a trusted proxy: anyone can write the left part of that header, so only what trusted
 * hops added counts.
 */
export function sourceAddress(peer: string | undefined, forwardedFor: string | null, trustedProxies: Networks): string {
  let source = normalizeIp(peer ?? '127.0.0.1')
  if (forwardedFor === null || !trustedProxies.has(source)) return source
  const hops = forwardedFor.split(',')
  for (let at = hops.length - 1; at >= 0; at--) {
    const hop = normalizeIp(hops[at]!.trim())
    // Garbage in the header ends what can be believed.
    if (isIP(hop) === 0) break
    source = hop
    if (!trustedProxies.has(hop)) break
  }
  return source
}
