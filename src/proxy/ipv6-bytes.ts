/**
 * The 16 bytes of an IPv6 address (RFC 4291 §2.2 text forms), for the places that need the
 * address as bytes rather than text: the PROXY protocol v2 header Portico sends (streams'
 * sendProxyProtocol), and rateLimit's grouping of IPv6 clients by prefix (per request: one pass
 * over the text, no substrings or arrays).
 */

/**
 * Writes the 16 bytes of a valid IPv6 address (as net.isIPv6 accepts it: "::" shorthand, a zone
 * after "%" ignored, a dotted IPv4 tail included) into `out` (a new buffer by default), and
 * returns `out`. The address must be valid: check it with net.isIPv6 first.
 */
export function ipv6Bytes(addr: string, out: Buffer = Buffer.alloc(16)): Buffer {
  let end = addr.indexOf('%');
  if (end === -1) end = addr.length;
  // Groups are written from the left; those after "::" are moved to the end once all are read.
  let w = 0;
  let gap = -1;
  let i = 0;
  if (addr.charCodeAt(0) === 58 && addr.charCodeAt(1) === 58) {
    gap = 0;
    i = 2;
  }
  while (i < end) {
    let j = i;
    let group = 0;
    let c = 0;
    for (; j < end; j++) {
      c = addr.charCodeAt(j);
      if (c === 58 /* : */ || c === 46 /* . */) break;
      group = group * 16 + (c <= 57 ? c - 48 : (c | 32) - 87);
    }
    if (c === 46) {
      // The dotted IPv4 tail: its four bytes, and the end of the address.
      let octet = 0;
      for (let k = i; k < end; k++) {
        const d = addr.charCodeAt(k);
        if (d === 46) {
          out[w++] = octet;
          octet = 0;
        } else octet = octet * 10 + d - 48;
      }
      out[w++] = octet;
      break;
    }
    out[w++] = group >> 8;
    out[w++] = group & 255;
    if (j >= end) break;
    if (addr.charCodeAt(j + 1) === 58) {
      gap = w;
      i = j + 2;
    } else i = j + 1;
  }
  if (gap !== -1) {
    const after = w - gap;
    out.copyWithin(16 - after, gap, w);
    out.fill(0, gap, 16 - after);
  }
  return out;
}
