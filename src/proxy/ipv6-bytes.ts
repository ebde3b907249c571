/**
 * The 16 bytes of an IPv6 address (RFC 4291 §2.2 text forms), for the places that need the
 * address as bytes rather than text: the PROXY protocol v2 header Portico sends (streams'
 * sendProxyProtocol), and rateLimit's grouping of IPv6 clients by prefix.
 */

/**
 * Writes the 16 bytes of a valid IPv6 address (as net.isIPv6 accepts it: "::" shorthand, a zone
 * after "%" ignored, a dotted IPv4 tail included) into `out` (a new buffer by default), and
 * returns `out`. The address must be valid: check it with net.isIPv6 first.
 */
export function ipv6Bytes(addr: string, out: Buffer = Buffer.alloc(16)): Buffer {
  let text = addr;
  const zone = text.indexOf('%');
  if (zone !== -1) text = text.slice(0, zone);
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    for (const p of text.slice(lastColon + 1).split('.')) tail.push(Number(p));
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head = '', rest] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const words = rest === undefined ? left : [...left, ...new Array<string>(8 - left.length - right.length).fill('0'), ...right];
  words.forEach((w, i) => out.writeUInt16BE(parseInt(w, 16), 2 * i));
  if (tail.length === 4) tail.forEach((b, i) => (out[12 + i] = b));
  return out;
}
