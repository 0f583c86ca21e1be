/**
 * A response body's bytes, at most `limit` of them as they arrive (after fetch unpacks a gzip or br
 * body): a gzip bomb or an endless body must not fill the caller's memory. Past the limit the body is
 * cancelled and the answer is undefined; each caller says so in its own error (the SDK's, the CLI's).
 */
export async function readLimited(response: Response, limit: number): Promise<Uint8Array | undefined> {
  if (response.body === null) return new Uint8Array(0)
  const reader = response.body.getReader()
  const chunks: Uint8Array[] = []
  let length = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    length += value.byteLength
    if (length > limit) {
      await reader.cancel().catch(() => {})
      return undefined
    }
    chunks.push(value)
  }
  if (chunks.length === 1) return chunks[0]!
  const bytes = new Uint8Array(length)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.byteLength
  }
  return bytes
}
