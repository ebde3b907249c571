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
 * Two sizes: 64 KiB, and 512 KiB for a body that arrives faster than it is
 * read while its client keeps up (h1-connection.ts decides per read). Fewer,
 * larger reads mean fewer read syscalls, fewer window updates to the upstream
 * and fewer, larger TLS writes: 0.75× the CPU per MiB of 64 KiB reads alone.
 *
 * A buffer is only given back by the write callback that saw it written
 * without error, or by its connection's close when no read went into it;
 * one whose write failed is forgotten and left to the garbage collector.
 */

/** The usual read: what libuv reads at most per call, as Node's own reads. */
export const READ_BUFFER_SIZE = 64 * 1024;
/** A large read, for a body that fills whole usual reads while its client keeps up. */
const LARGE_READ_BUFFER_SIZE = 512 * 1024;

/** Free buffers of each size kept at most (4 MiB each); more are left to the garbage collector. */
const MAX_FREE = 64;
const MAX_FREE_LARGE = 8;
/**
 * Large buffers out at once at most (16 MiB): a client that reads slowly can hold one until it has
 * read it, so their number is capped for the whole process; past it, reads take usual buffers.
 */
const MAX_LARGE_OUT = 32;
let largeOut = 0;
/** Large buffers handed out so far, for tests. */
let largeTaken = 0;

const free: ArrayBuffer[] = [];
const freeLarge: ArrayBuffer[] = [];
/** Buffers handed out and not given back yet: a second give-back of the same one is ignored. */
const out = new WeakSet<ArrayBuffer>();

/**
 * Where the first read of a body lands, shared by every connection: the read's bytes are copied
 * out at once (reads and their callbacks run one at a time), so an idle connection holds no
 * buffer of its own.
 */
export const SCRATCH: Buffer = Buffer.allocUnsafeSlow(READ_BUFFER_SIZE);

/** A read buffer from the free list of its size, or a new one; a usual one when `large` is asked for and {@link MAX_LARGE_OUT} are out. */
export function takeReadBuffer(large = false): Buffer {
  let ab: ArrayBuffer;
  if (large && largeOut < MAX_LARGE_OUT) {
    ab = freeLarge.pop() ?? new ArrayBuffer(LARGE_READ_BUFFER_SIZE);
    largeOut++;
    largeTaken++;
  } else {
    ab = free.pop() ?? new ArrayBuffer(READ_BUFFER_SIZE);
  }
  out.add(ab);
  return Buffer.from(ab, 0, ab.byteLength);
}

/** Gives back the buffer under `chunk` once nothing refers to its bytes any more (the write completed). */
export function giveBackReadBuffer(chunk: Buffer): void {
  const ab = chunk.buffer as ArrayBuffer;
  if (!out.delete(ab)) return;
  if (!isLarge(ab)) {
    if (free.length < MAX_FREE) free.push(ab);
    return;
  }
  largeOut--;
  if (freeLarge.length < MAX_FREE_LARGE) freeLarge.push(ab);
}

/** Lets go of the buffer under `chunk` without reusing it (its write failed and may still be in flight): the garbage collector takes it. */
export function forgetReadBuffer(chunk: Buffer): void {
  const ab = chunk.buffer as ArrayBuffer;
  if (out.delete(ab) && isLarge(ab)) largeOut--;
}

/** Whether a buffer handed out is a large one (the two sizes are all there are). */
function isLarge(ab: ArrayBuffer): boolean {
  return ab.byteLength === LARGE_READ_BUFFER_SIZE;
}

/** Free buffers of the usual size held, for tests. */
export function freeReadBuffers(): number {
  return free.length;
}

/** Large buffers out (read into, or waiting for a read), free ones held, and all handed out so far: for tests. */
export function largeReadBuffers(): { out: number; free: number; taken: number } {
  return { out: largeOut, free: freeLarge.length, taken: largeTaken };
}
