/**
 * An answer's bytes where JSON must carry them (a stored task's view, a broadcast's part): as a
 * string when they are UTF-8 text, a BOM and NULs kept; otherwise `{"base64": "…"}`, which a JSON
 * string cannot hold without turning the bytes into U+FFFD.
 */

/** Refuses what is not UTF-8, and keeps a leading BOM: it is one of the answer's bytes. */
const EXACT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** Bytes that are not UTF-8, for JSON. */
export interface Base64Bytes {
  base64: string
}

/** `bytes` as their text, or as base64 when they are not UTF-8. */
export function utf8OrBase64(bytes: Uint8Array): string | Base64Bytes {
  try {
    return EXACT_UTF8.decode(bytes)
  } catch {
    return { base64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') }
  }
}
