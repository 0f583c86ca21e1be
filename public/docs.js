// The docs page: live figures from /status, copy buttons on code blocks, examples pointed at this server,
// contents that follow the reading (a menu on narrow screens).
import { formatCount, formatUptime, setPill } from './ui.js'

const STATUS_EVERY_MS = 5000
const EXAMPLE_ORIGIN = 'http://localhost:8080'

addCopyButtons()
pointExamplesHere()
contentsMenu()
followReading()
refreshFigures()

function addCopyButtons() {
  for (const pre of document.querySelectorAll('.code > pre')) {
    const button = document.createElement('button')
    button.type = 'button'
    button.className = 'copy'
    button.textContent = 'Copy'
    button.setAttribute('aria-label', 'Copy this example')
    button.addEventListener('click', async () => {
      const copied = await copyText(pre.textContent ?? '')
      button.textContent = copied ? 'Copied' : 'Select and copy'
      button.classList.toggle('done', copied)
      setTimeout(() => {
        button.textContent = 'Copy'
        button.classList.remove('done')
      }, 1500)
    })
    pre.parentElement.append(button)
  }
}

/** The Clipboard API needs a secure context (https or localhost); elsewhere fall back to a selection. */
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text)
      return true
    } catch {
      // Permission refused: try the selection below.
    }
  }
  const scratch = document.createElement('textarea')
  scratch.value = text
  scratch.setAttribute('readonly', '')
  scratch.className = 'offscreen'
  document.body.append(scratch)
  scratch.select()
  const copied = document.execCommand('copy')
  scratch.remove()
  return copied
}

/** Examples say localhost:8080; served from elsewhere, they should name this server so a copy just works. */
function pointExamplesHere() {
  if (location.origin === EXAMPLE_ORIGIN) return
  const wsOrigin = location.origin.replace(/^http/, 'ws')
  for (const code of document.querySelectorAll('.code code')) {
    code.textContent = code.textContent
      .replaceAll(`ws://localhost:8080/ws`, `${wsOrigin}${document.body.dataset.wsPath || '/ws'}`)
      .replaceAll(EXAMPLE_ORIGIN, location.origin)
  }
}

/**
 * Under 900 px the contents column gives way to a bar with a menu: the button opens it, and choosing an
 * entry, Escape or a click elsewhere closes it, so the page is never covered longer than needed.
 */
function contentsMenu() {
  const toc = document.getElementById('toc')
  const toggle = toc.querySelector('.toc-toggle')
  const setOpen = (open) => {
    toc.classList.toggle('open', open)
    toggle.setAttribute('aria-expanded', String(open))
  }
  toggle.addEventListener('click', () => setOpen(!toc.classList.contains('open')))
  for (const link of toc.querySelectorAll('.toc-links a')) link.addEventListener('click', () => setOpen(false))
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') setOpen(false)
  })
  document.addEventListener('click', (event) => {
    if (!toc.contains(event.target)) setOpen(false)
  })
}

/**
 * Marks the contents entry of the section being read: the last one whose top has passed a line a third
 * of the way down the window. Worked out from positions on every scroll rather than from intersection
 * events, which only say what entered the line: at the top of the page no section had crossed it, and
 * the mark stayed wherever the last crossing left it. Two ends need their own rule: above the first
 * section's top it is the first; scrolled to the bottom, the last, whose top may never reach the line.
 * An entry chosen in the contents (or the URL's #hash) stays marked while its section is on screen,
 * even when the page cannot scroll it up to the line, until the reader scrolls.
 */
function followReading() {
  const links = [...document.querySelectorAll('.toc-links a')]
  const sections = links.map((link) => document.getElementById(link.hash.slice(1))).filter(Boolean)
  const currentLabel = document.getElementById('toc-current')
  if (sections.length === 0) return
  let chosen = document.getElementById(location.hash.slice(1))
  const mark = (id) => {
    for (const link of links) {
      const current = link.hash === `#${id}`
      link.classList.toggle('current', current)
      if (current) {
        link.setAttribute('aria-current', 'location')
        currentLabel.textContent = link.textContent
      } else link.removeAttribute('aria-current')
    }
  }
  const update = () => {
    if (chosen && sections.includes(chosen)) {
      const { top } = chosen.getBoundingClientRect()
      if (top >= 0 && top < innerHeight) return mark(chosen.id)
    }
    chosen = null
    const root = document.documentElement
    if (scrollY + innerHeight >= root.scrollHeight - 2 && scrollY > 0) return mark(sections.at(-1).id)
    const line = innerHeight / 3
    let id = sections[0].id
    for (const section of sections) if (section.getBoundingClientRect().top <= line) id = section.id
    mark(id)
  }
  let scheduled = false
  const schedule = () => {
    if (scheduled) return
    scheduled = true
    requestAnimationFrame(() => {
      scheduled = false
      update()
    })
  }
  for (const link of links) link.addEventListener('click', () => (chosen = document.getElementById(link.hash.slice(1))))
  // The reader moving the page themselves ends a choice made in the contents.
  for (const type of ['wheel', 'touchmove']) addEventListener(type, () => (chosen = null), { passive: true })
  addEventListener('keydown', (event) => {
    if (['ArrowUp', 'ArrowDown', 'PageUp', 'PageDown', 'Home', 'End', ' '].includes(event.key)) chosen = null
  })
  addEventListener('scroll', schedule, { passive: true })
  addEventListener('resize', schedule)
  addEventListener('hashchange', () => {
    chosen = document.getElementById(location.hash.slice(1))
    schedule()
  })
  update()
}

async function refreshFigures() {
  const state = document.getElementById('server-state')
  // A hidden tab does not need fresh figures; it catches up when it is shown again.
  if (document.hidden) {
    document.addEventListener('visibilitychange', refreshFigures, { once: true })
    return
  }
  try {
    const response = await fetch('/status', { cache: 'no-store' })
    if (!response.ok) throw new Error(`status ${response.status}`)
    showFigures(await response.json())
    setPill(state, 'ok', 'Server online')
  } catch {
    setPill(state, 'bad', 'Server unreachable')
  }
  setTimeout(refreshFigures, STATUS_EVERY_MS)
}

function showFigures(status) {
  const regions = Object.values(status.regions ?? {})
  const active = regions.reduce((sum, region) => sum + region.active, 0)
  setText('fig-clients', formatCount(status.clients))
  setText('fig-clients-sub', `${formatCount(active)} taking tasks`)
  setText('fig-regions', formatCount(regions.filter((region) => region.clients > 0).length))
  setText('fig-in-flight', formatCount(status.tasks))
  setText('fig-ws', `WebSocket ${status.websocket === 'Connected' ? 'on' : 'off'}`)
  setText('fig-tasks', formatCount(status.tasks_total ?? 0))
  setText('fig-failed', `${formatCount(status.tasks_failed ?? 0)} failed`)
  setText('fig-uptime', formatUptime(status.uptime_s ?? 0))
  setText('fig-version', status.version ? `version ${status.version}` : '')
}

function setText(id, text) {
  document.getElementById(id).textContent = text
}
