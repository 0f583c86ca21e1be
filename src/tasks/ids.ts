/** Where a task's id comes from: the server's are RandomTaskIds; a test may hand out fixed ones. */
export interface TaskIds {
  next(): string
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
/** 17 characters of 62: 101 random bits, past the 96 that leave an id unguessable. */
const ID_LENGTH = 17
export const TASK_ID_PATTERN = /^[A-Za-z0-9]{17}$/
// 248 = 4 × 62: a byte below it picks a character without bias; the few at or above it are skipped.
const UNBIASED_BELOW = 248
// Random bytes are drawn a pool at a time: one call per ~200 tasks, not one per task.
const POOL_BYTES = 4096

/**
 * Task ids: 17 random letters and digits. Unguessable, unlike a counter, which let anyone holding one
 * id count every tenant's tasks; short, as they are in every answer's headers and every log line; and
 * without `-` or `_`, so an id never reads as a command-line flag and a double click selects it whole.
 */
export class RandomTaskIds implements TaskIds {
  private readonly pool = new Uint8Array(POOL_BYTES)
  private offset = POOL_BYTES
  // The id's character codes, turned into one flat string at the end: appending 17 characters one by one made 16 intermediate strings per task.
  private readonly codes: number[] = new Array<number>(ID_LENGTH).fill(0)

  constructor(private readonly fill: (bytes: Uint8Array) => void = (bytes) => void crypto.getRandomValues(bytes)) {}

  next(): string {
    const { codes } = this
    let length = 0
    while (length < ID_LENGTH) {
      if (this.offset === POOL_BYTES) {
        this.fill(this.pool)
        this.offset = 0
      }
      const byte = this.pool[this.offset++]!
      if (byte < UNBIASED_BELOW) codes[length++] = ALPHABET.charCodeAt(byte % ALPHABET.length)
    }
    return String.fromCharCode.apply(null, codes)
  }
}
