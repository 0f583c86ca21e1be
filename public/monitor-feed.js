// The dashboard's live feed: the server's monitoring channel over WebSocket.

const RETRY_FIRST_MS = 500
const RETRY_MAX_MS = 5000
// The server sends an update every 500 ms to every watcher; this long without one means the link is dead
// even if no close event came (a laptop waking up, a proxy dropping the socket silently).
const SILENCE_LIMIT_MS = 6000
// Heartbeats that change nothing are not pushed (that would flood); a periodic snapshot keeps "last seen" true.
const RESYNC_EVERY_MS = 15_000
const CLOSE_POLICY_VIOLATION = 1008

/**
 * Joins the monitoring channel with a token and reports what happens through callbacks:
 * `onSnapshot(payload)` on joining (and each resync), `onUpdate(payload)` for each batch, and
 * `onState(state, detail)` with state `live`, `retrying` ({ delayMs, code, wasLive }) or `refused` (message).
 * It reconnects by itself with back-off; a refused token stops it, since retrying would not help.
 */
export class MonitorFeed {
  constructor({ url, token, onSnapshot, onUpdate, onState }) {
    this.url = url
    this.token = token
    this.handlers = { onSnapshot, onUpdate, onState }
    this.socket = undefined
    this.failures = 0
    this.wasLive = false
    this.stopped = false
    this.timers = {}
  }

  start() {
    this.stopped = false
    this.connect()
  }

  stop() {
    this.stopped = true
    this.clearTimers()
    this.socket?.close(1000, 'dashboard closed')
    this.socket = undefined
  }

  connect() {
    const socket = new WebSocket(this.url)
    this.socket = socket
    let refusal
    socket.addEventListener('open', () => this.join(socket))
    socket.addEventListener('message', (event) => {
      if (socket !== this.socket) return
      let message
      try {
        message = JSON.parse(event.data)
      } catch {
        return
      }
      this.watchSilence(socket)
      if (message.type === 'monitor_ok') {
        this.failures = 0
        this.wasLive = true
        this.handlers.onSnapshot(message.payload)
        this.handlers.onState('live')
      } else if (message.type === 'update') {
        this.handlers.onUpdate(message.payload)
      } else if (message.type === 'error') {
        refusal = message.payload?.message ?? 'refused'
      }
    })
    socket.addEventListener('close', (event) => {
      if (socket !== this.socket || this.stopped) return
      if (event.code === CLOSE_POLICY_VIOLATION) {
        this.clearTimers()
        this.stopped = true
        this.handlers.onState('refused', refusal ?? (event.reason || 'refused'))
        return
      }
      this.retryLater(event.code)
    })
  }

  retryLater(code) {
    this.clearTimers()
    this.socket = undefined
    const delayMs = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.failures++)
    this.handlers.onState('retrying', { delayMs, code, wasLive: this.wasLive })
    this.timers.retry = setTimeout(() => this.connect(), delayMs)
  }

  join(socket) {
    socket.send(JSON.stringify({ type: 'monitor', payload: { token: this.token } }))
    this.timers.resync = setInterval(() => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'monitor', payload: { token: this.token } }))
    }, RESYNC_EVERY_MS)
  }

  watchSilence(socket) {
    clearTimeout(this.timers.silence)
    this.timers.silence = setTimeout(() => {
      // A dead link may never finish a close handshake: give up on this socket now, not when the browser does.
      socket.close(4001, 'no update from the server')
      this.retryLater(4001)
    }, SILENCE_LIMIT_MS)
  }

  clearTimers() {
    clearTimeout(this.timers.retry)
    clearTimeout(this.timers.silence)
    clearInterval(this.timers.resync)
    this.timers = {}
  }
}
