// The most recent tasks, newest first, with their outcome.
import { clockTime, formatMs, h } from './ui.js'

const SHOWN = 12
export const OUTCOME_TONE = { ok: 'ok', failed: 'bad', timeout: 'bad', no_client: 'warn' }
export const OUTCOME_TEXT = { ok: 'ok', failed: 'failed', timeout: 'timed out', no_client: 'no client' }

export class TasksList {
  constructor(table, emptyNote) {
    this.body = table.tBodies[0]
    this.emptyNote = emptyNote
    this.records = []
  }

  /** A snapshot, newest first. */
  replaceAll(records) {
    this.records = records.slice(0, SHOWN)
    this.render()
  }

  /** Tasks finished since the last batch, oldest first (as the server collects them). */
  add(records) {
    this.records = [...records.slice().reverse(), ...this.records].slice(0, SHOWN)
    this.render()
  }

  render() {
    this.emptyNote.hidden = this.records.length > 0
    this.body.replaceChildren(
      ...this.records.map((task) =>
        h(
          'tr',
          { 'data-task': task.task_id },
          h('td', { 'data-label': 'Time' }, clockTime(task.at)),
          h(
            'td',
            { class: 'task-id', 'data-label': 'Task' },
            task.task_id,
            task.mode === 'broadcast' ? h('span', { class: 'muted small' }, ' broadcast') : null,
          ),
          h('td', { 'data-label': 'Region' }, task.region),
          h('td', { 'data-label': 'Node' }, task.node_id ?? '–'),
          h(
            'td',
            { 'data-label': 'Outcome' },
            h(
              'span',
              { class: `badge ${OUTCOME_TONE[task.outcome] ?? ''}`, title: `HTTP ${task.status}, ${task.attempts} attempt(s)` },
              `${OUTCOME_TEXT[task.outcome] ?? task.outcome} · ${task.status}`,
            ),
          ),
          h('td', { class: 'num', 'data-label': 'Latency' }, formatMs(task.latency_ms)),
        ),
      ),
    )
  }
}
