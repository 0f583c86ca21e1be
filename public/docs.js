// The docs page: live figures from /status, copy buttons on code blocks, examples pointed at this server.
import { formatCount, formatUptime, setPill } from './ui.js'

const STATUS_EVERY_MS = 5000
const EXAMPLE_ORIGIN = 'http://localhost:8080'

addCopyButtons()
pointExamplesHere()
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

/** Marks the contents entry of the section being read. */
function followReading() {
  const links = new Map([...document.querySelectorAll('.toc a')].map((link) => [link.hash.slice(1), link]))
  const observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue
        for (const link of links.values()) link.classList.remove('current')
        links.get(entry.target.id)?.classList.add('current')
      }
    },
    // A section counts as being read when it crosses a line a third of the way down the window.
    { rootMargin: '-33% 0px -66% 0px' },
  )
  for (const section of document.querySelectorAll('.content > section')) observer.observe(section)
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
