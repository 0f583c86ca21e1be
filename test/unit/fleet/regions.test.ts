import { describe, expect, test } from 'bun:test'
import { SEED_HIERARCHY } from '../../../src/config/config.ts'
import { Regions, regionTopic } from '../../../src/fleet/regions.ts'

const regions = new Regions(SEED_HIERARCHY)

describe('regions', () => {
  test('a region climbs to global through its ancestors', () => {
    expect(regions.chain('us-east-1')).toEqual(['us-east-1', 'usa', 'northamerica', 'global'])
    expect(regions.chain('global')).toEqual(['global'])
  })

  test('regions the hierarchy does not name are children of global', () => {
    expect(regions.parentOf('us-west')).toBe('global')
    expect(regions.chain('us-west')).toEqual(['us-west', 'global'])
  })

  test('empty, "global" and "default" all mean anywhere', () => {
    expect(Regions.normalize(undefined)).toBe('global')
    expect(Regions.normalize('')).toBe('global')
    expect(Regions.normalize('default')).toBe('global')
    expect(Regions.normalize('usa')).toBe('usa')
  })

  test('isWithin follows the hierarchy, not name prefixes', () => {
    expect(regions.isWithin('us-east-1', 'usa')).toBe(true)
    expect(regions.isWithin('us-east-1', 'global')).toBe(true)
    expect(regions.isWithin('eu-west-1', 'usa')).toBe(false)
    expect(regions.isWithin('usa', 'us-east-1')).toBe(false)
  })

  test('the tree counts clients at each region and under it', () => {
    const tree = regions.tree(
      new Map([
        ['us-east-1', { clients: 2, active: 1, failing: 0 }],
        ['us-west', { clients: 1, active: 1, failing: 0 }],
      ]),
    )
    expect(tree.region).toBe('global')
    expect(tree.total).toBe(3)
    expect(tree.total_active).toBe(2)
    expect(tree.children.map((child) => child.region)).toEqual(['asia', 'emea', 'northamerica', 'us-west'])
    const usa = tree.children.find((child) => child.region === 'northamerica')!.children[0]!
    expect(usa).toMatchObject({ region: 'usa', clients: 0, total: 2, total_active: 1 })
    expect(usa.children.map((child) => [child.region, child.clients])).toEqual([
      ['us-east-1', 2],
      ['us-west-1', 0],
    ])
  })

  test('topics are namespaced by region', () => {
    expect(regionTopic('usa')).toBe('region:usa')
  })
})

describe('a deep hierarchy', () => {
  test('its tree is built without recursion, 100 000 levels deep', () => {
    const hierarchy: Record<string, string> = {}
    for (let i = 1; i < 100_000; i++) hierarchy[`r${i}`] = `r${i - 1}`
    const regions = new Regions(hierarchy)
    let node = regions.tree(new Map([['r99999', { clients: 2, active: 1, failing: 0 }]]))
    expect(node).toMatchObject({ region: 'global', total: 2, total_active: 1 })
    let depth = 0
    while (node.children.length > 0) {
      node = node.children[0]!
      depth++
    }
    expect(depth).toBe(100_000)
    expect(node).toMatchObject({ region: 'r99999', clients: 2, active: 1 })
  })
})
