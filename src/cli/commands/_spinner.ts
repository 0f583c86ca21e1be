/**
 * A spinner with the elapsed time on stderr while a command waits — only when a person watches
 * (stdout and stderr both terminals), never into a pipe or a file, where it would be noise in the data.
 */
const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']
const EVERY_MS = 100

export async function withSpinner<T>(label: string, work: Promise<T>, watched = process.stderr.isTTY === true && process.stdout.isTTY === true): Promise<T> {
  if (!watched) return work
  const startedMs = performance.now()
  let frame = 0
  const draw = () => {
    const elapsedS = ((performance.now() - startedMs) / 1000).toFixed(1)
    process.stderr.write(`\r${FRAMES[frame++ % FRAMES.length]} ${label} ${elapsedS} s`)
  }
  draw()
  const timer = setInterval(draw, EVERY_MS)
  try {
    return await work
  } finally {
    clearInterval(timer)
    // The line is cleared, so what the command prints next starts on a clean line.
    process.stderr.write('\r\x1b[K')
  }
}
