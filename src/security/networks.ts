import { BlockList, isIP } from 'node:net'

/**
 * Address ranges, for deciding where the server may call an agent. Pure; built on node:net's
 * BlockList (which also matches IPv4-mapped IPv6 addresses against IPv4 ranges).
 */

/** Addresses no agent should be called at unless an operator says so: the server itself, its link, nowhere, everyone. */
const SPECIAL_RANGES = [
  ['127.0.0.0/8', 'loopback'],
  ['::1/128', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['fe80::/10', 'link-local'],
  ['0.0.0.0/8', 'unspecified'],
  ['::/128', 'unspecified'],
  ['224.0.0.0/4', 'multicast'],
  ['ff00::/8', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
] as const

export type SpecialKind = (typeof SPECIAL_RANGES)[number][1]

/** The private ranges of RFC 1918 and RFC 4193: where agents of one operator usually are. */
export const PRIVATE_NETWORKS = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7']

export interface Cidr {
  address: string
  prefix: number
  family: 'ipv4' | 'ipv6'
}

/** Parses "10.0.0.0/8" or a bare address (a /32 or /128); undefined if it is neither. */
export function parseCidr(text: string): Cidr | undefined {
  const [address = '', prefixText, extra] = text.split('/')
  const version = isIP(address)
  if (version === 0 || extra !== undefined) return undefined
  const max = version === 4 ? 32 : 128
  const prefix = prefixText === undefined ? max : Number(prefixText)
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (prefixText !== undefined && !/^\d+$/.test(prefixText))) return undefined
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' }
}

/** "::ffff:10.0.0.1" and "10.0.0.1" are one address; brackets and a zone are not part of it. */
export function normalizeIp(ip: string): string {
  const bare = ip.replace(/^\[|\]$/g, '').replace(/%.*$/, '')
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare)
  return (mapped ? mapped[1]! : bare).toLowerCase()
}

function familyOf(ip: string): 'ipv4' | 'ipv6' {
  return isIP(ip) === 4 ? 'ipv4' : 'ipv6'
}

const specials = SPECIAL_RANGES.map(([cidr, kind]) => ({ cidr: parseCidr(cidr)!, kind, list: listOf([parseCidr(cidr)!]) }))

function listOf(cidrs: readonly Cidr[]): BlockList {
  const list = new BlockList()
  for (const { address, prefix, family } of cidrs) list.addSubnet(address, prefix, family)
  return list
}

/** What kind of special address `ip` is, or undefined for an ordinary (private or public) one. */
export function specialKind(ip: string): SpecialKind | undefined {
  const address = normalizeIp(ip)
  const family = familyOf(address)
  return specials.find(({ list }) => list.check(address, family))?.kind
}

/**
 * A set of networks. A special address matches only an entry that lies inside its special range
 * ("127.0.0.0/8", "169.254.10.0/24"): listing it is a deliberate choice, which "0.0.0.0/0" is not.
 */
export class Networks {
  private readonly all: BlockList
  private readonly special: BlockList

  constructor(readonly cidrs: readonly Cidr[]) {
    this.all = listOf(cidrs)
    this.special = listOf(
      cidrs.filter((cidr) => specials.some(({ cidr: range, list }) => cidr.prefix >= range.prefix && list.check(cidr.address, cidr.family))),
    )
  }

  static parse(texts: readonly string[]): Networks {
    return new Networks(texts.map((text) => parseCidr(text)!).filter(Boolean))
  }

  has(ip: string): boolean {
    const address = normalizeIp(ip)
    const family = familyOf(address)
    return specialKind(address) === undefined ? this.all.check(address, family) : this.special.check(address, family)
  }
}
