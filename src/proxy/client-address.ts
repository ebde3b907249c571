/**
 * The client's address for access rules: the connection's peer, or, when the
 * peer is a trusted proxy (`forwarding.trustedProxies`), the address its
 * X-Forwarded-For names: the rightmost one that is not a trusted proxy itself
 * (nginx's `real_ip_recursive on`), since every proxy appends the address it
 * saw and only the entries added by trusted ones can be believed.
 */
import { BlockList, isIP } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';

function family(addr: string): 'ipv4' | 'ipv6' | undefined {
  const v = isIP(addr);
  return v === 4 ? 'ipv4' : v === 6 ? 'ipv6' : undefined;
}

/** Adds an address or CIDR to a list; IPv4 ones also as IPv4-mapped IPv6, as dual-stack sockets report IPv4 peers. */
function addCidr(list: BlockList, cidr: string): void {
  const [addr = '', bits] = cidr.split('/');
  const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
  if (bits === undefined) list.addAddress(addr, type);
  else list.addSubnet(addr, Number(bits), type);
  if (type === 'ipv4') {
    if (bits === undefined) list.addAddress(`::ffff:${addr}`, 'ipv6');
    else list.addSubnet(`::ffff:${addr}`, 96 + Number(bits), 'ipv6');
  }
}

/** A list of validated addresses and CIDRs ("allowFrom", "trustedProxies") compiled for lookups; undefined for none. */
export function compileAddressList(cidrs: readonly string[] | undefined): BlockList | undefined {
  if (cidrs === undefined || cidrs.length === 0) return undefined;
  const list = new BlockList();
  for (const c of cidrs) addCidr(list, c);
  return list;
}

/** Whether `addr` is in `list`; false for anything that is not an IP address. */
export function isInList(list: BlockList, addr: string): boolean {
  const f = family(addr);
  return f !== undefined && list.check(addr, f);
}

/**
 * An X-Forwarded-For entry without the port some proxies write after it ("203.0.113.7:51234", as Azure
 * Application Gateway does; "[2001:db8::7]:51234", or an IPv6 address in brackets alone), as nginx's
 * realip module reads them. Kept, the port made every connection of one client another address: a rateLimit
 * bucket per source port (so no limit at all), and an allowFrom that refused the client. An IPv6 address
 * without brackets has more than one colon and is left as it is. One indexOf for an IPv4 entry.
 */
function withoutPort(entry: string): string {
  if (entry.charCodeAt(0) === 91 /* '[' */) {
    const end = entry.indexOf(']');
    return end > 1 ? entry.slice(1, end) : entry;
  }
  const colon = entry.indexOf(':');
  return colon > 0 && entry.indexOf(':', colon + 1) === -1 ? entry.slice(0, colon) : entry;
}

/**
 * The address access rules judge: the peer's, unless the peer is trusted; then the rightmost
 * X-Forwarded-For entry that is not trusted (or the leftmost, when all are), without a port a proxy
 * wrote after it. An entry that is not an IP address ends the walk and is returned as is, so it
 * matches no allow list. `req` is the request, whose headers are read only for a trusted peer.
 */
export function clientAddress(remote: string, req: { readonly headers: IncomingHttpHeaders }, trusted: BlockList | undefined): string {
  if (trusted === undefined || !isInList(trusted, remote)) return remote;
  // Read only here: an HTTP/1.1 request builds its header object on first use.
  const xff = req.headers['x-forwarded-for'];
  if (xff === undefined) return remote;
  const entries = (Array.isArray(xff) ? xff.join(',') : xff).split(',');
  let addr = remote;
  for (let i = entries.length - 1; i >= 0; i--) {
    addr = withoutPort((entries[i] as string).trim());
    if (!isInList(trusted, addr)) return addr;
  }
  return addr;
}
