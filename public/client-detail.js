// One client's detail: its recent tasks with every attempt, and the operator's actions on it (admin role).
import { OUTCOME_TEXT, OUTCOME_TONE } from './tasks-list.js'
import { clockTime, formatMs, h } from './ui.js'

/** What each action is called on its button, the request it sends and what the message says once done. */
const ACTIONS = {
  drain: { label: 'Drain', method: 'POST', path: '/drain', done: 'drained: it finishes its tasks and gets no new ones' },
  undrain: { label: 'Undrain', method: 'POST', path: '/undrain', done: 'undrained: it takes tasks again' },
  eject: { label: 'Eject', method: 'POST', path: '/eject', done: 'ejected: back on probation when its time is up' },
  forget: { label: 'Forget', method: 'DELETE', path: '', done: 'forgotten: removed (an agent still running registers again)' },
}

export class ClientDetail {
  /** `token()` is the signed-in token; `viewOf(nodeId)` the client as the live table has it. */
  constructor(panel, { token, viewOf }) {
    this.panel = panel
    this.token = token
    this.viewOf = viewOf
    this.nodeId = undefined
    this.title = panel.querySelector('#detail-title')
    this.summary = panel.querySelector('#detail-summary')
    this.message = panel.querySelector('#detail-message')
    this.tasks = panel.querySelector('#detail-tasks')
    this.buttons = {}
    for (const [name, action] of Object.entries(ACTIONS)) {
      const button = panel.querySelector(`[data-action="${name}"]`)
      button.textContent = action.label
      button.addEventListener('click', () => this.act(name))
      this.buttons[name] = button
    }
    panel.querySelector('#detail-close').addEventListener('click', () => this.close())
  }

  async open(nodeId) {
    this.nodeId = nodeId
    this.panel.hidden = false
    this.title.textContent = nodeId
    this.message.hidden = true
    this.showView(this.viewOf(nodeId))
    await this.load()
    this.panel.scrollIntoView({ block: 'nearest' })
  }

  close() {
    this.nodeId = undefined
    this.panel.hidden = true
  }

  /** The live feed changed the client: its state and the buttons follow. */
  refresh() {
    if (this.nodeId !== undefined) this.showView(this.viewOf(this.nodeId))
  }

  showView(view) {
    if (!view) return
    const held = view.instance ? ` · on ${view.instance}` : ''
    this.summary.textContent = `${view.region} · ${view.protocol.toUpperCase()} · weight ${view.weight} · ${view.state}${view.draining ? ' · draining' : ''}${held}`
    this.buttons.drain.hidden = view.draining && view.drained_by_operator === true
    this.buttons.undrain.hidden = view.drained_by_operator !== true
  }

  async load() {
    const nodeId = this.nodeId
    const response = await this.request('GET', '')
    if (nodeId !== this.nodeId) return
    if (!response.ok) {
      this.tasks.replaceChildren()
      return this.say('bad', response.body.error ?? `HTTP ${response.status}`)
    }
    this.showView(response.body.client)
    this.showTasks(response.body.tasks)
  }

  showTasks(tasks) {
    if (tasks.length === 0) {
      this.tasks.replaceChildren(h('p', { class: 'empty' }, 'No tasks on this client yet (since this server started).'))
      return
    }
    this.tasks.replaceChildren(
      h(
        'ol',
        { class: 'detail-tasks' },
        ...tasks.map((task) =>
          h(
            'li',
            { 'data-task': task.task_id },
            h(
              'div',
              { class: 'detail-task-head' },
              h('span', { class: 'task-id' }, task.task_id),
              h('span', { class: `badge ${OUTCOME_TONE[task.outcome] ?? ''}` }, `${OUTCOME_TEXT[task.outcome] ?? task.outcome} · ${task.status}`),
              h('span', { class: 'muted small' }, `${clockTime(task.at)} · ${formatMs(task.latency_ms)} · ${task.region}`),
            ),
            h(
              'ol',
              { class: 'attempts' },
              ...task.tries.map((attempt, index) =>
                h(
                  'li',
                  { class: attempt.kind ? 'failed' : 'answered', 'data-node': attempt.node_id },
                  `#${index + 1} `,
                  h('span', { class: attempt.node_id === this.nodeId ? 'node-id' : undefined }, attempt.node_id),
                  ` · ${attemptResult(attempt)} · ${formatMs(attempt.ms)}`,
                ),
              ),
            ),
          ),
        ),
      ),
    )
  }

  async act(name) {
    const action = ACTIONS[name]
    const nodeId = this.nodeId
    for (const button of Object.values(this.buttons)) button.disabled = true
    try {
      const response = await this.request(action.method, action.path)
      if (nodeId !== this.nodeId) return
      if (!response.ok) return this.say('bad', refusal(response))
      this.say('ok', `${nodeId} ${action.done}.`)
      if (name === 'forget') {
        this.tasks.replaceChildren()
        for (const button of Object.values(this.buttons)) button.hidden = true
        return
      }
      this.showView(response.body.client)
    } finally {
      for (const button of Object.values(this.buttons)) button.disabled = false
    }
  }

  async request(method, path) {
    try {
      const response = await fetch(`/clients/${encodeURIComponent(this.nodeId)}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token()}` },
      })
      const body = await response.json().catch(() => ({}))
      return { ok: response.ok, status: response.status, body }
    } catch (error) {
      return { ok: false, status: 0, body: { error: `cannot reach the server (${error.message})` } }
    }
  }

  say(tone, text) {
    this.message.className = `message ${tone}`
    this.message.textContent = text
    this.message.hidden = false
  }
}

function attemptResult(attempt) {
  if (!attempt.kind) return `answered ${attempt.status}`
  if (attempt.kind === 'status') return `failed: answered ${attempt.status}`
  return `failed: ${attempt.kind.replace('_', ' ')}`
}

/** A refused action, in words: the role it needs, or the instance to send it to. */
function refusal({ status, body }) {
  if (body.code === 'forbidden') return 'This token may not act on clients: operator actions need a token with the admin role.'
  if (body.code === 'held_elsewhere') return `${body.error}.`
  return body.error ?? `HTTP ${status}`
}
