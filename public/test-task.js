// The "send a test task" form: POST /task/request with the signed-in token, then the answer as it came.
import { formatMs, h } from './ui.js'

/** Wires the form; `token()` gives the current token (the form sends nothing without one). */
export function attachTestTask(form, result, token) {
  const note = form.querySelector('#test-note')
  const send = form.querySelector('#test-send')
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const data = new FormData(form)
    let payload
    try {
      payload = JSON.parse(String(data.get('payload')))
    } catch (error) {
      note.textContent = `The payload is not valid JSON: ${error.message}`
      return
    }
    note.textContent = ''
    send.disabled = true
    const started = performance.now()
    try {
      const response = await fetch('/task/request', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token()}` },
        body: JSON.stringify({ region: String(data.get('region')).trim(), payload, mode: data.get('mode') }),
      })
      const body = await response.text()
      showAnswer(result, response, body, performance.now() - started)
    } catch (error) {
      showFailure(result, `Could not reach the server: ${error.message}`)
    } finally {
      send.disabled = false
    }
  })
}

function showAnswer(result, response, body, elapsedMs) {
  const tone = response.ok ? 'ok' : response.status >= 500 ? 'bad' : 'warn'
  const node = response.headers.get('x-moonlight-node')
  const attempts = response.headers.get('x-moonlight-attempts')
  const taskId = response.headers.get('x-task-id')
  result.hidden = false
  result.replaceChildren(
    h(
      'div',
      { class: 'meta' },
      h('span', { class: `badge ${tone}`, 'data-field': 'status' }, `${response.status} ${response.statusText}`.trim()),
      node ? h('span', { 'data-field': 'node' }, 'answered by ', h('strong', {}, node)) : null,
      attempts && attempts !== '1' ? h('span', {}, `${attempts} attempts`) : null,
      taskId ? h('span', { class: 'task-id' }, taskId) : null,
      h('span', {}, formatMs(elapsedMs)),
    ),
    h('pre', { 'data-field': 'body' }, pretty(body, response.headers.get('content-type') ?? '')),
  )
}

function showFailure(result, message) {
  result.hidden = false
  result.replaceChildren(h('div', { class: 'meta' }, h('span', { class: 'badge bad', 'data-field': 'status' }, 'no answer'), message))
}

function pretty(body, contentType) {
  if (!contentType.includes('json')) return body
  try {
    return JSON.stringify(JSON.parse(body), null, 2)
  } catch {
    return body
  }
}
