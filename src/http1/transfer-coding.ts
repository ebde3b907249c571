/**
 * The one transfer coding Portico accepts in an HTTP/1.1 message, on either side: `chunked` alone
 * (RFC 9112 §6.1). llhttp reads "gzip, chunked" as chunked, and Portico drops the header when it
 * forwards, so any other coding would arrive as the body's own bytes, still coded.
 */

/** Whether a Transfer-Encoding value is exactly "chunked" (any case, surrounding spaces allowed). Hot path where the header is met. */
export function isChunkedAlone(value: string): boolean {
  if (value.length === 7) return value.toLowerCase() === 'chunked';
  return value.trim().toLowerCase() === 'chunked';
}
