/**
 * Read buffers for large upstream response bodies, recycled once the client's
 * socket has written them. A body read through the parser is copied out of
 * its read buffer into a new Buffer for every chunk (llhttp's on_body in
 * Node); at hundreds of MiB/s those short-lived allocations made V8 run a
 * full mark-compact about twelve times a second (S4: 15–20 % of the samples
 * in the garbage collector, 7 % in the copy). A Content-Length body is instead
 * read straight into one of these buffers (net.Socket's `onread`), handed to
 * the client as it is, and taken back here when the write completes.
 *
 * A buffer is only given back by the write callback that saw it written
 * without error; one that is never given back is left to the garbage collector.
 */

/** Size of one read: what libuv reads at most per call, as Node's own reads. */
export const READ_BUFFER_SIZE = 64 * 1024;
/** Free buffers kept at most (4 MiB); more are left to the garbage collector. */
const MAX_FREE = 64;

const free: ArrayBuffer[] = [];
/** Buffers handed out and not given back yet: a second give-back of the same one is ignored. */
const out = new WeakSet<ArrayBuffer>();

/**
 * Where the first read of a body lands, shared by every connection: the read's bytes are copied
 * out at once (reads and their callbacks run one at a time), so an idle connection holds no
 * buffer of its own.
 */
export const SCRATCH: Buffer = Buffer.allocUnsafeSlow(READ_BUFFER_SIZE);

/** A read buffer from the free list, or a new one. */
export function takeReadBuffer(): Buffer {
  const ab = free.pop() ?? new ArrayBuffer(READ_BUFFER_SIZE);
  out.add(ab);
  return Buffer.from(ab, 0, READ_BUFFER_SIZE);
}

/** Whether `chunk` is (a view of) a buffer handed out by {@link takeReadBuffer} and not given back yet. */
export function isReadBuffer(chunk: Buffer): boolean {
  return out.has(chunk.buffer as ArrayBuffer);
}

/** Gives back the buffer under `chunk` once nothing refers to its bytes any more (the write completed). */
export function giveBackReadBuffer(chunk: Buffer): void {
  const ab = chunk.buffer as ArrayBuffer;
  if (!out.delete(ab)) return;
  if (free.length < MAX_FREE) free.push(ab);
}

/** Free buffers held, for tests. */
export function freeReadBuffers(): number {
  return free.length;
}
