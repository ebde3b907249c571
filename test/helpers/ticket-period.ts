/**
 * Tests that resume TLS sessions and expect them to resume: Portico changes its session ticket key on
 * the hour (src/tls/session-tickets.ts), and Node's servers take one key, so a ticket issued before the
 * change no longer resumes after it. Such a test starts with this, and runs clear of the change.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { TICKET_KEY_PERIOD_MS } from '../../src/tls/session-tickets.js';

/** Resolves at once unless the ticket key changes within `marginMs`; then 1 s after it has changed (every process has applied the new key by then). */
export async function clearOfTicketKeyChange(marginMs = 20_000): Promise<void> {
  const now = Date.now();
  const next = (Math.floor(now / TICKET_KEY_PERIOD_MS) + 1) * TICKET_KEY_PERIOD_MS;
  if (next - now < marginMs) await delay(next - now + 1000);
}
