import type { RegionCounts, RegionNode } from '../wire/views.ts'

export type { RegionCounts, RegionNode } from '../wire/views.ts'

export const ROOT_REGION = 'global'

/** Region names a caller may use to mean "anywhere". */
const ANYWHERE = new Set(['', 'global', 'default'])

/**
 * The region hierarchy: child -> parent, rooted at "global". Regions the config does not name
 * (the seed's own clients use "us-west") are children of global, so every region has a path up.
 */
export class Regions {
  private readonly parents: ReadonlyMap<string, string>
  private readonly chains = new Map<string, readonly string[]>()

  /** Every name the hierarchy has, as a region or as a parent, and the root: looked up per task. */
  private readonly named: ReadonlySet<string>

  constructor(hierarchy: Record<string, string>) {
    this.parents = new Map(Object.entries(hierarchy))
    this.named = new Set([ROOT_REGION, ...this.parents.keys(), ...this.parents.values()])
  }

  /** Maps the caller's region to a region name; empty, "global" and "default" mean the root. */
  static normalize(region: string | undefined): string {
    return region === undefined || ANYWHERE.has(region) ? ROOT_REGION : region
  }

  parentOf(region: string): string | undefined {
    if (region === ROOT_REGION) return undefined
    return this.parents.get(region) ?? ROOT_REGION
  }

  /**
   * The region and all its ancestors, nearest first, ending at global. Cached for the regions the
   * hierarchy names (it is on every task's path); any other name is just [name, global], built
   * afresh, so callers inventing region names cannot grow the cache.
   */
  chain(region: string): readonly string[] {
    if (region !== ROOT_REGION && !this.parents.has(region)) return [region, ROOT_REGION]
    let chain = this.chains.get(region)
    if (!chain) {
      const regions: string[] = []
      for (let r: string | undefined = region; r !== undefined; r = this.parentOf(r)) regions.push(r)
      chain = regions
      this.chains.set(region, chain)
    }
    return chain
  }

  /** Whether the hierarchy names `region` (as a region or as a parent), or it is the root. */
  names(region: string): boolean {
    return this.named.has(region)
  }

  /** True if `region` is `ancestor` or lies under it. */
  isWithin(region: string, ancestor: string): boolean {
    return this.chain(region).includes(ancestor)
  }

  /** Every region the config names, plus the extra ones given (e.g. where clients registered). */
  known(extra: Iterable<string> = []): Set<string> {
    const all = new Set<string>([ROOT_REGION])
    for (const [child, parent] of this.parents) all.add(child).add(parent)
    for (const region of extra) for (const r of this.chain(region)) all.add(r)
    return all
  }

  /** The hierarchy as a tree, with client counts per region (`counts`: clients registered at each region). */
  tree(counts: ReadonlyMap<string, RegionCounts> = new Map()): RegionNode {
    const children = new Map<string, string[]>()
    for (const region of this.known(counts.keys())) {
      const parent = this.parentOf(region)
      if (parent === undefined) continue
      const siblings = children.get(parent) ?? []
      siblings.push(region)
      children.set(parent, siblings)
    }
    // Built without recursion, children before their parent: a hierarchy thousands of levels deep must not overflow the stack.
    const order: string[] = [ROOT_REGION]
    for (let at = 0; at < order.length; at++) {
      // Sorted in place, so the second pass reads each region's children in the same order.
      const kids = children.get(order[at]!)?.sort() ?? []
      for (const kid of kids) order.push(kid)
    }
    const nodes = new Map<string, RegionNode>()
    for (let at = order.length - 1; at >= 0; at--) {
      const region = order[at]!
      const kids = (children.get(region) ?? []).map((kid) => nodes.get(kid)!)
      const { clients, active, failing } = counts.get(region) ?? { clients: 0, active: 0, failing: 0 }
      nodes.set(region, {
        region,
        clients,
        active,
        failing,
        total: kids.reduce((sum, kid) => sum + kid.total, clients),
        total_active: kids.reduce((sum, kid) => sum + kid.total_active, active),
        children: kids,
      })
    }
    return nodes.get(ROOT_REGION)!
  }
}

/** The pub/sub topic a WebSocket client subscribes to for a region. */
export function regionTopic(region: string): string {
  return `region:${region}`
}
