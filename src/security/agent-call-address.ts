import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { MoonlightError } from '../errors.ts'
import { type Networks, normalizeIp, specialKind } from './networks.ts'

/** Resolves a host name to every address it has (node:dns by default; tests may pass their own). */
export type Resolve = (host: string) => Promise<string[]>

export const resolveAll: Resolve = async (host) => (await lookup(host, { all: true })).map((entry) => entry.address)

/**
 * Where the server may call an HTTP agent: at the address its heartbeat came from, or inside
 * `agents.allowed_networks`. Loopback, link-local, unspecified, multicast and broadcast addresses
 * are refused unless they are the heartbeat's own source or listed in allowed_networks themselves.
 * A host name is resolved and every address checked; the call then goes to the address that was
 * checked, so a DNS answer that changes later (rebinding) cannot send it elsewhere.
 * Returns the address to call; throws 403 `address_not_allowed`.
 */
export async function agentAddress(announced: string | undefined, sourceIp: string, allowed: Networks, resolve: Resolve = resolveAll): Promise<string> {
  const source = normalizeIp(sourceIp)
  if (announced === undefined) return source
  let addresses: string[]
  if (isIP(normalizeIp(announced)) !== 0) addresses = [normalizeIp(announced)]
  else {
    try {
      addresses = (await resolve(announced)).map(normalizeIp)
    } catch (error) {
      throw new MoonlightError(
        403,
        'address_not_allowed',
        `the host name ${announced} does not resolve: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      )
    }
    if (addresses.length === 0) throw new MoonlightError(403, 'address_not_allowed', `the host name ${announced} has no address`)
  }
  for (const address of addresses) {
    if (address === source || allowed.has(address)) continue
    const kind = specialKind(address)
    const what = announced === address ? `ip ${address}` : `ip ${announced} (${address})`
    throw new MoonlightError(
      403,
      'address_not_allowed',
      `${what} is ${kind ? `a ${kind} address` : 'outside agents.allowed_networks'} and not the address this heartbeat came from (${source}); ` +
        `omit "ip" to be called at ${source}, or list ${address} in agents.allowed_networks`,
      { ip: announced },
    )
  }
  return addresses[0]!
}
