/**
 * Task ids: a prefix random per process, then a counter. Short (they are in every answer's headers
 * and every log line), unique across restarts, and cheap: no UUID per task.
 */
export class TaskIds {
  private sequence = 0

  constructor(private readonly prefix: string = Math.random().toString(36).slice(2, 8)) {}

  next(): string {
    return `${this.prefix}-${(++this.sequence).toString(36)}`
  }
}
