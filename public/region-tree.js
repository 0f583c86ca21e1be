// The region hierarchy as a nested list, each region with its clients (at it and under it).
import { h } from './ui.js'

/** Renders the server's RegionNode tree into `list`; returns every region name, for the test-task form. */
export function renderRegionTree(list, root) {
  const names = []
  const item = (node) => {
    names.push(node.region)
    const classes = ['node']
    if (node.total === 0) classes.push('empty-region')
    else if (node.total_active < node.total) classes.push('has-clients', 'degraded')
    else classes.push('has-clients')
    // Its own clients only: a failing one is kept in service, so the counts alone would look fine.
    if (node.failing > 0) classes.push('failing')
    const failing = node.failing > 0 ? `, ${node.failing} of them failing` : ''
    const title = `${node.clients} registered here (${node.active} taking tasks${failing}); ${node.total} at or under ${node.region}`
    return h(
      'li',
      { 'data-region': node.region },
      h('div', { class: classes.join(' '), title }, h('span', {}, node.region), h('span', { class: 'count' }, `${node.total_active} / ${node.total}`)),
      node.children.length ? h('ul', {}, node.children.map(item)) : null,
    )
  }
  list.replaceChildren(item(root))
  return names
}
