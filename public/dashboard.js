// The dashboard: token sign-in, then everything live from the monitoring channel.
import { TaskChart } from './chart.js'
import { ClientDetail } from './client-detail.js'
import { ClientsTable } from './clients-table.js'
import { MonitorFeed } from './monitor-feed.js'
import { renderRegionTree } from './region-tree.js'
import { TasksList } from './tasks-list.js'
import { attachTestTask } from './test-task.js'
import { formatCount, formatMs, h, setPill } from './ui.js'

// sessionStorage, not localStorage: the token is forgotten when the tab closes.
const TOKEN_KEY = 'moonlight.token'
const $ = (id) => document.getElementById(id)

const wsPath = document.body.dataset.wsPath
const view = {
  login: $('login'),
  loginForm: $('login-form'),
  tokenInput: $('token'),
  loginSubmit: $('login-submit'),
  loginMessage: $('login-message'),
  board: $('board'),
  banner: $('banner'),
  connection: $('connection'),
  signOut: $('sign-out'),
}
const clients = new ClientsTable($('clients'), $('clients-empty'), $('clients-count'), {
  filterInput: $('clients-filter'),
  onSelect: (nodeId) => detail.open(nodeId),
})
clients.setNoMatchNote($('clients-no-match'))
// On a phone the headings are hidden (rows are cards): the same sort from a select.
$('clients-sort').addEventListener('change', (event) => {
  clients.sort = { field: event.target.value, direction: 1 }
  clients.showSort()
  clients.arrange()
})
const detail = new ClientDetail($('client-detail'), {
  token: () => sessionStorage.getItem(TOKEN_KEY) ?? '',
  viewOf: (nodeId) => clients.viewOf(nodeId),
})
const tasks = new TasksList($('tasks'), $('tasks-empty'))
const chart = new TaskChart($('chart'))
let feed

attachTestTask($('test-task'), $('test-result'), () => sessionStorage.getItem(TOKEN_KEY) ?? '')
view.loginForm.addEventListener('submit', (event) => {
  event.preventDefault()
  const token = view.tokenInput.value.trim()
  if (!token) return showLoginMessage('warn', 'Enter a token.')
  sessionStorage.setItem(TOKEN_KEY, token)
  signIn(token)
})
view.signOut.addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY)
  signOut()
})
setInterval(() => clients.tick(), 1000)

if (!wsPath) {
  showLoginMessage('warn', 'Live monitoring needs the WebSocket endpoint, which this server has turned off (ws.enabled is false).')
  view.tokenInput.disabled = view.loginSubmit.disabled = true
} else {
  const saved = sessionStorage.getItem(TOKEN_KEY)
  if (saved) signIn(saved)
  else view.tokenInput.focus()
}

function signIn(token) {
  feed?.stop()
  view.loginSubmit.disabled = true
  view.loginSubmit.textContent = 'Signing in…'
  setPill(view.connection, 'warn', 'connecting…')
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  feed = new MonitorFeed({ url: `${scheme}://${location.host}${wsPath}`, token, onSnapshot, onUpdate, onState })
  feed.start()
}

function signOut(message) {
  feed?.stop()
  detail.close()
  feed = undefined
  view.board.hidden = true
  view.signOut.hidden = true
  view.login.hidden = false
  view.loginSubmit.disabled = false
  view.loginSubmit.textContent = 'Sign in'
  setPill(view.connection, undefined, 'signed out')
  if (message) showLoginMessage('bad', message)
  else view.loginMessage.hidden = true
  view.tokenInput.value = ''
  view.tokenInput.focus()
}

function onState(state, detail) {
  if (state === 'live') {
    view.login.hidden = true
    view.loginMessage.hidden = true
    view.board.hidden = false
    view.board.classList.remove('stale')
    view.banner.hidden = true
    view.signOut.hidden = false
    setPill(view.connection, 'ok', 'live')
  } else if (state === 'refused') {
    sessionStorage.removeItem(TOKEN_KEY)
    signOut(`The server refused this token (${detail}). Check it and try again.`)
  } else if (state === 'retrying') {
    const seconds = Math.max(1, Math.round(detail.delayMs / 1000))
    setPill(view.connection, 'bad', 'server unreachable')
    const why = detail.code === 1001 ? 'The server is restarting or shutting down.' : 'Lost the connection to the server.'
    if (detail.wasLive) {
      view.banner.textContent = `${why} Reconnecting by itself (next try in ${seconds} s)… the figures below are from before.`
      view.banner.hidden = false
      view.board.classList.add('stale')
    } else {
      showLoginMessage('warn', `Cannot reach the server. Trying again in ${seconds} s…`)
    }
  }
}

function onSnapshot(snapshot) {
  clients.replaceAll(snapshot.clients)
  detail.refresh()
  tasks.replaceAll(snapshot.recent)
  chart.setSeries(snapshot.series)
  showRegions(snapshot.regions)
  showStatus(snapshot.status, snapshot.series.at(-1))
}

function onUpdate(update) {
  if (update.clients?.length) clients.update(update.clients)
  if (update.removed?.length) clients.markGone(update.removed)
  if (update.clients?.length || update.removed?.length) detail.refresh()
  if (update.tasks?.length) tasks.add(update.tasks)
  if (update.regions) showRegions(update.regions)
  if (update.point) chart.addPoint(update.point)
  showStatus(update.status, update.point)
}

function showRegions(tree) {
  const names = renderRegionTree($('regions'), tree)
  $('region-names').replaceChildren(...names.map((name) => h('option', { value: name })))
}

function showStatus(status, lastSecond) {
  const present = clients.present()
  const taking = present.filter((client) => client.state !== 'ejected' && !client.draining).length
  $('tile-clients').textContent = formatCount(status.clients)
  $('tile-clients-sub').textContent = `${formatCount(taking)} taking tasks`
  $('tile-in-flight').textContent = formatCount(status.in_flight)
  $('tile-total').textContent = formatCount(status.tasks_total)
  $('tile-failed').textContent = `${formatCount(status.tasks_failed)} failed`
  $('tile-rate').textContent = formatCount(lastSecond?.tasks ?? 0)
  $('tile-latency').textContent = lastSecond?.tasks ? `avg ${formatMs(lastSecond.avg_latency_ms)}` : 'last second'
  const { latency, queue } = status
  if (queue) {
    $('tile-queue').textContent = formatCount(queue.depth)
    const wait = queue.wait_p50_ms === null ? 'wait –' : `wait p50 ${quantile(queue.wait_p50_ms)}`
    $('tile-queue-sub').textContent = `${wait} · ${formatCount(queue.shed)} shed · ${formatCount(queue.retries_refused)} retries refused`
  }
  $('tile-p50').textContent = latency ? quantile(latency.p50_ms) : '–'
  $('tile-quantiles').textContent = latency ? `p95 ${quantile(latency.p95_ms)} · p99 ${quantile(latency.p99_ms)}` : 'p95 – · p99 –'
}

/** A quantile's bucket bound: "≤ 25 ms"; null is past the last bucket. */
function quantile(ms) {
  return ms === null ? '> 60 s' : `≤ ${formatMs(ms)}`
}

function showLoginMessage(tone, text) {
  view.loginMessage.className = `message ${tone}`
  view.loginMessage.textContent = text
  view.loginMessage.hidden = false
}
