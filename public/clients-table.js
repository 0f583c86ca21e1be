// The clients table: one row per node, updated in place so a busy fleet does not rebuild the table twice a second.
import { clockTime, formatCount, formatMs, h, timeAgo } from './ui.js'

// A client that left stays on screen, struck through with the reason, long enough to be noticed.
const GONE_KEPT_MS = 60_000
const FIELDS = ['node', 'region', 'protocol', 'weight', 'state', 'in_flight', 'successes', 'failures', 'latency', 'last_seen']
const NUMERIC = new Set(['weight', 'in_flight', 'successes', 'failures', 'latency'])
/** Each column's heading: on a phone every row is a card, and each cell shows its heading beside it. */
const LABELS = {
  node: 'Node',
  region: 'Region',
  protocol: 'Protocol',
  weight: 'Weight',
  state: 'State',
  in_flight: 'In flight',
  successes: 'OK',
  failures: 'Failed',
  latency: 'Latency',
  last_seen: 'Last seen',
}
const STATE_ORDER = { healthy: 0, probation: 1, failing: 2, ejected: 3 }
/** What each column sorts by; ties fall back to region, then node id. */
const SORT_KEYS = {
  node: (view) => view.node_id,
  region: (view) => view.region,
  protocol: (view) => view.protocol,
  weight: (view) => (view.draining ? -1 : (view.effective_weight ?? view.weight)),
  state: (view) => STATE_ORDER[view.state] ?? 4,
  in_flight: (view) => view.in_flight,
  successes: (view) => view.successes,
  failures: (view) => view.failures,
  latency: (view) => view.latency_ms,
  last_seen: (view) => Date.parse(view.last_seen),
}

export class ClientsTable {
  /** `onSelect(nodeId)` when a row is clicked (or Enter is pressed on it): the dashboard shows that client's detail. */
  constructor(table, emptyNote, countNote, { filterInput, onSelect } = {}) {
    this.body = table.tBodies[0]
    this.emptyNote = emptyNote
    this.countNote = countNote
    this.onSelect = onSelect
    /** node id → { view, row, cells, goneAt?, reason? } */
    this.entries = new Map()
    /** Region then node id until a heading is clicked. */
    this.sort = { field: 'region', direction: 1 }
    this.filter = ''
    this.headings = [...table.tHead.rows[0].cells]
    for (const heading of this.headings) {
      const button = heading.querySelector('button[data-sort]')
      button?.addEventListener('click', () => this.sortBy(button.dataset.sort))
    }
    filterInput?.addEventListener('input', () => {
      this.filter = filterInput.value.trim().toLowerCase()
      this.applyFilter()
      this.summarize()
    })
    this.showSort()
  }

  /** A heading clicked: sorts by it, or reverses the order when it already does. */
  sortBy(field) {
    this.sort = this.sort.field === field ? { field, direction: -this.sort.direction } : { field, direction: 1 }
    this.showSort()
    this.arrange()
  }

  showSort() {
    for (const heading of this.headings) {
      const field = heading.querySelector('button[data-sort]')?.dataset.sort
      if (field === this.sort.field) heading.setAttribute('aria-sort', this.sort.direction > 0 ? 'ascending' : 'descending')
      else heading.removeAttribute('aria-sort')
    }
  }

  /** Whether a client matches the text filter: a part of its node id, region or address. */
  matches(view) {
    if (!this.filter) return true
    return [view.node_id, view.region, view.ip].some((text) => text.toLowerCase().includes(this.filter))
  }

  applyFilter() {
    for (const entry of this.entries.values()) entry.row.hidden = !this.matches(entry.view)
  }

  /**
   * A snapshot: these are the clients now. One shown as present but missing from it left while we were
   * not told (the feed was down, or the server restarted): it is shown as left, like any other.
   */
  replaceAll(views, nowMs = Date.now()) {
    const present = new Set(views.map((view) => view.node_id))
    const missing = [...this.entries].filter(([nodeId, entry]) => !present.has(nodeId) && entry.goneAt === undefined)
    for (const view of views) this.upsert(view, false)
    this.markGone(
      missing.map(([nodeId]) => ({ node_id: nodeId, reason: 'no longer registered' })),
      nowMs,
    )
  }

  /** Clients that joined or changed. */
  update(views) {
    for (const view of views) this.upsert(view, true)
    this.arrange()
  }

  markGone(removed, nowMs = Date.now()) {
    for (const { node_id: nodeId, reason } of removed) {
      const entry = this.entries.get(nodeId)
      if (!entry) continue
      entry.goneAt = nowMs
      entry.reason = reason
      this.fill(entry, nowMs)
    }
    this.arrange()
  }

  /** Ages the "last seen" column and drops clients that left long enough ago. */
  tick(nowMs = Date.now()) {
    for (const [nodeId, entry] of this.entries) {
      if (entry.goneAt !== undefined && nowMs - entry.goneAt > GONE_KEPT_MS) {
        entry.row.remove()
        this.entries.delete(nodeId)
      } else {
        entry.cells.last_seen.textContent =
          entry.goneAt === undefined ? timeAgo(entry.view.last_seen, nowMs) : `left ${timeAgo(new Date(entry.goneAt).toISOString(), nowMs)}`
      }
    }
    this.summarize()
  }

  /** Clients present now (not the ones shown as left). */
  present() {
    return [...this.entries.values()].filter((entry) => entry.goneAt === undefined).map((entry) => entry.view)
  }

  upsert(view, highlightNew) {
    let entry = this.entries.get(view.node_id)
    if (!entry) {
      const cells = Object.fromEntries(
        FIELDS.map((field) => [field, h('td', { class: NUMERIC.has(field) ? 'num' : undefined, 'data-field': field, 'data-label': LABELS[field] })]),
      )
      // A row is a button of sorts: it opens the client's detail, by mouse or keyboard.
      const row = h(
        'tr',
        { 'data-node': view.node_id, class: highlightNew ? 'fresh' : undefined, tabindex: '0', title: 'show its recent tasks and actions' },
        ...Object.values(cells),
      )
      row.addEventListener('click', () => this.onSelect?.(view.node_id))
      row.addEventListener('keydown', (event) => {
        if (event.key === 'Enter') this.onSelect?.(view.node_id)
      })
      entry = { view, row, cells }
      this.entries.set(view.node_id, entry)
    }
    entry.view = view
    entry.row.hidden = !this.matches(view)
    entry.goneAt = undefined
    entry.reason = undefined
    this.fill(entry, Date.now())
  }

  fill(entry, nowMs) {
    const { view, cells, row } = entry
    const gone = entry.goneAt !== undefined
    row.classList.toggle('gone', gone)
    // In a cluster, the instance that holds the client, beside its address.
    // A WebSocket client has no port of its own to show (null): its source address alone.
    const where = view.port === null ? view.ip : `${view.ip}:${view.port}`
    const address = view.instance ? `${where} · on ${view.instance}` : where
    cells.node.replaceChildren(
      h('span', { class: 'node-id' }, view.node_id),
      h('span', { class: 'address', 'data-instance': view.instance }, address),
      ...conflictNote(view.conflict),
    )
    // One flex item beside the cell's label on a phone card (see dashboard.css): it moves under the label whole rather than break.
    cells.region.replaceChildren(h('span', { class: 'value' }, view.region))
    cells.protocol.replaceChildren(h('span', { class: 'badge accent' }, view.protocol.toUpperCase()))
    // While it ramps up (health.slow_start) the share it gets now, beside the weight it will have.
    if (view.effective_weight === undefined) cells.weight.textContent = String(view.weight)
    else
      cells.weight.replaceChildren(
        String(view.weight),
        ' ',
        h(
          'span',
          { class: 'muted small ramping', title: 'slow start: the weight the balancer gives it now, rising to its full weight' },
          `now ${round(view.effective_weight)}`,
        ),
      )
    cells.state.replaceChildren(h('span', { class: 'value' }, ...stateBadges(view, gone ? entry.reason : undefined)))
    // Its slots, when it announced them: in flight of the most it takes at once.
    cells.in_flight.textContent =
      view.max_in_flight === undefined ? formatCount(view.in_flight) : `${formatCount(view.in_flight)} / ${formatCount(view.max_in_flight)}`
    cells.in_flight.title = view.max_in_flight === undefined ? '' : `${view.in_flight} of its ${view.max_in_flight} slots taken (max_in_flight)`
    cells.successes.textContent = formatCount(view.successes)
    cells.failures.textContent = formatCount(view.failures)
    cells.latency.textContent = view.latency_ms > 0 ? formatMs(view.latency_ms) : '–'
    cells.last_seen.textContent = gone ? `left ${timeAgo(new Date(entry.goneAt).toISOString(), nowMs)}` : timeAgo(view.last_seen, nowMs)
    cells.last_seen.title = view.last_seen
  }

  /** The chosen column (region by default), then region, then node id; rows move only when the order changed, so a fresh row's highlight is not restarted. */
  arrange() {
    const key = SORT_KEYS[this.sort.field]
    const { direction } = this.sort
    const compare = (a, b) => {
      const x = key(a.view)
      const y = key(b.view)
      const byField = typeof x === 'string' ? x.localeCompare(y) : x - y
      return direction * byField || a.view.region.localeCompare(b.view.region) || a.view.node_id.localeCompare(b.view.node_id)
    }
    const sorted = [...this.entries.values()].sort(compare)
    const current = [...this.body.rows]
    if (sorted.length !== current.length || sorted.some((entry, index) => entry.row !== current[index])) {
      this.body.append(...sorted.map((entry) => entry.row))
    }
    this.summarize()
  }

  summarize() {
    const present = this.present()
    this.emptyNote.hidden = this.entries.size > 0
    const protocols = { http: 0, ws: 0 }
    for (const view of present) protocols[view.protocol]++
    const shown = [...this.entries.values()].filter((entry) => !entry.row.hidden).length
    const filtered = this.filter && shown < this.entries.size ? ` · ${shown} of ${this.entries.size} shown` : ''
    this.countNote.textContent = present.length ? `${present.length} connected · ${protocols.http} HTTP, ${protocols.ws} WebSocket${filtered}` : ''
    this.noMatch?.toggleAttribute('hidden', !(this.filter && shown === 0 && this.entries.size > 0))
  }

  /** The note shown when the filter hides every row. */
  setNoMatchNote(note) {
    this.noMatch = note
  }

  /** The view of a client on screen, present or gone. */
  viewOf(nodeId) {
    return this.entries.get(nodeId)?.view
  }
}

/** Another live agent claims this node id and is refused: say where it is, so the operator can give it its own id. */
function conflictNote(conflict) {
  if (!conflict) return []
  const title = `another agent at ${conflict.other_address} uses this node_id and is refused (${conflict.count}× since ${clockTime(conflict.since)}): give each agent its own node id`
  return [h('span', { class: 'badge warn conflict', title }, `node_id conflict: ${conflict.other_address} · ${conflict.count}×`)]
}

/** Two decimals at most: a ramp's weights are tenths and twentieths of integers. */
function round(value) {
  return String(Math.round(value * 100) / 100)
}

function stateBadges(view, goneReason) {
  if (goneReason !== undefined) return [h('span', { class: 'badge bad', title: goneReason }, 'left'), ' ', h('span', { class: 'muted small' }, goneReason)]
  const badges = []
  if (view.state === 'healthy') badges.push(h('span', { class: 'badge ok' }, 'healthy'))
  else if (view.state === 'failing') {
    const title = `${view.consecutive_failures} failures in a row: kept in service only because ejecting it would leave its pool with too few clients`
    badges.push(h('span', { class: 'badge bad', title }, 'failing'))
  } else if (view.state === 'ejected') {
    badges.push(h('span', { class: 'badge bad', title: `after ${view.consecutive_failures} failures in a row` }, 'ejected'))
    if (view.ejected_until) badges.push(' ', h('span', { class: 'muted small' }, `until ${clockTime(view.ejected_until)}`))
  } else badges.push(h('span', { class: 'badge warn', title: 'the next task decides whether it is healthy again' }, 'probation'))
  if (view.drained_by_operator)
    badges.push(' ', h('span', { class: 'badge warn', title: 'drained by an operator: finishes its tasks, gets no new ones until undrained' }, 'drained'))
  else if (view.draining) badges.push(' ', h('span', { class: 'badge warn', title: 'weight 0: finishes its tasks, gets no new ones' }, 'draining'))
  return badges
}
