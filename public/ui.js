// Small helpers shared by the docs page and the dashboard.

/**
 * Builds an element. Children that are strings become text nodes, never HTML: node ids, regions and
 * task answers come from clients and must not be able to inject markup.
 * @example h('td', { class: 'num', title: 'exact' }, '42')
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue
    element.setAttribute(name, value === true ? '' : String(value))
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue
    element.append(child instanceof Node ? child : String(child))
  }
  return element
}

const numberFormat = new Intl.NumberFormat('en')

export function formatCount(value) {
  return numberFormat.format(value)
}

/** 850 → "850 ms", 1520 → "1.52 s": latencies as people read them. */
export function formatMs(ms) {
  if (ms < 1) return ms === 0 ? '0 ms' : '<1 ms'
  if (ms < 1000) return `${Math.round(ms)} ms`
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
}

/** 3725 → "1 h 2 m". */
export function formatUptime(seconds) {
  if (seconds < 60) return `${seconds} s`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) return `${minutes} m`
  const hours = Math.floor(minutes / 60)
  if (hours < 48) return `${hours} h ${minutes % 60} m`
  return `${Math.floor(hours / 24)} d ${hours % 24} h`
}

/** "just now", "12 s ago", "3 m ago" from an ISO time. */
export function timeAgo(iso, nowMs = Date.now()) {
  const seconds = Math.max(0, Math.round((nowMs - Date.parse(iso)) / 1000))
  if (seconds < 2) return 'just now'
  if (seconds < 90) return `${seconds} s ago`
  const minutes = Math.round(seconds / 60)
  if (minutes < 90) return `${minutes} m ago`
  return `${Math.round(minutes / 60)} h ago`
}

export function clockTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
}

/** Sets a status pill's tone (ok, warn, bad or none) and text. */
export function setPill(element, tone, text) {
  element.className = tone ? `pill ${tone}` : 'pill'
  element.textContent = text
}
