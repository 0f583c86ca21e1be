// A rolling one-minute chart in SVG: tasks per second as bars (errors in red), average latency as a line.
import { formatMs } from './ui.js'

const SVG = 'http://www.w3.org/2000/svg'
const SECONDS_SHOWN = 60
const PAD = { left: 34, right: 50, top: 10, bottom: 20 }

export class TaskChart {
  /** `container` gets one SVG that follows its size. */
  constructor(container) {
    this.container = container
    this.points = []
    this.svg = document.createElementNS(SVG, 'svg')
    this.svg.setAttribute('role', 'img')
    this.svg.setAttribute('aria-label', 'Tasks per second and average latency over the last minute')
    container.append(this.svg)
    new ResizeObserver(() => this.draw()).observe(container)
  }

  /** Replaces the series (a snapshot: oldest first). */
  setSeries(points) {
    this.points = points.slice(-SECONDS_SHOWN)
    this.draw()
  }

  /** Adds the last whole second; the server sends the same second twice a second, so a repeat replaces it. */
  addPoint(point) {
    const last = this.points.at(-1)
    if (last && last.second === point.second) this.points[this.points.length - 1] = point
    else if (!last || point.second > last.second) {
      // Seconds with no batch (a quiet tab, a slow link) are zero, not skipped: the x axis is time.
      for (let second = last ? last.second + 1 : point.second; second < point.second; second++) {
        this.points.push({ second, tasks: 0, errors: 0, avg_latency_ms: 0 })
      }
      this.points.push(point)
    }
    this.points = this.points.slice(-SECONDS_SHOWN)
    this.draw()
  }

  draw() {
    const width = this.container.clientWidth
    const height = this.container.clientHeight
    if (width === 0 || height === 0) return
    this.svg.setAttribute('viewBox', `0 0 ${width} ${height}`)
    const plotWidth = width - PAD.left - PAD.right
    const plotHeight = height - PAD.top - PAD.bottom
    const maxTasks = niceCeiling(Math.max(1, ...this.points.map((point) => point.tasks)))
    const maxLatency = niceCeiling(Math.max(1, ...this.points.map((point) => point.avg_latency_ms)))
    const slot = plotWidth / SECONDS_SHOWN
    const firstSlot = SECONDS_SHOWN - this.points.length
    const y = (value, max) => PAD.top + plotHeight - (value / max) * plotHeight

    const parts = []
    for (const fraction of [0, 0.5, 1]) {
      const lineY = PAD.top + plotHeight * (1 - fraction)
      parts.push(svg('line', { class: 'grid', x1: PAD.left, x2: width - PAD.right, y1: lineY, y2: lineY }))
      parts.push(svg('text', { class: 'axis', x: PAD.left - 6, y: lineY + 4, 'text-anchor': 'end' }, shortNumber(maxTasks * fraction)))
      parts.push(svg('text', { class: 'axis', x: width - PAD.right + 6, y: lineY + 4 }, latencyLabel(maxLatency * fraction)))
    }
    parts.push(svg('text', { class: 'axis', x: PAD.left, y: height - 4 }, '−60 s'))
    parts.push(svg('text', { class: 'axis', x: width - PAD.right, y: height - 4, 'text-anchor': 'end' }, 'now'))

    const barWidth = Math.max(1, slot - 2)
    let path = ''
    this.points.forEach((point, index) => {
      const x = PAD.left + (firstSlot + index) * slot + 1
      if (point.tasks > 0) {
        const top = y(point.tasks, maxTasks)
        parts.push(svg('rect', { class: 'bar', x, y: top, width: barWidth, height: PAD.top + plotHeight - top }))
        if (point.errors > 0) {
          const errorTop = y(point.errors, maxTasks)
          parts.push(svg('rect', { class: 'bar error', x, y: errorTop, width: barWidth, height: PAD.top + plotHeight - errorTop }))
        }
        const lineX = x + barWidth / 2
        const lineY = y(point.avg_latency_ms, maxLatency)
        // A second without tasks has no latency: break the line there rather than draw it down to zero.
        const previous = this.points[index - 1]
        path += `${previous && previous.tasks > 0 ? 'L' : 'M'}${lineX.toFixed(1)} ${lineY.toFixed(1)} `
        parts.push(svg('circle', { class: 'line', cx: lineX, cy: lineY, r: 1.5 }))
      }
    })
    if (path) parts.push(svg('path', { class: 'line', d: path }))
    this.svg.replaceChildren(...parts)
  }
}

function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG, tag)
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value))
  if (text !== undefined) element.textContent = text
  return element
}

/** The next 1, 2 or 5 × 10ⁿ at or above `value`, so axis labels are round. */
function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value))
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude
  return 10 * magnitude
}

/** Axis labels: sub-millisecond steps as decimals ("0.5 ms"), larger ones as formatMs does. */
function latencyLabel(ms) {
  return ms > 0 && ms < 10 ? `${Number(ms.toFixed(1))} ms` : formatMs(ms)
}

function shortNumber(value) {
  if (value >= 1000) return `${Number((value / 1000).toFixed(1))}k`
  return String(Number(value.toFixed(1)))
}
