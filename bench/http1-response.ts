/**
 * A minimal HTTP/1.1 response reader for the raw-TLS benchmark clients:
 * enough to find the status and the end of a Content-Length body.
 */

/** Incremental state of one response on one connection. */
export interface ResponseReader {
  /** Feed bytes; returns true once the whole response has arrived. */
  push(chunk: Buffer): boolean;
  /** The status code, or 0 if the head has not arrived. */
  readonly status: number;
}

/** A reader for one response with a Content-Length body. */
export function createResponseReader(): ResponseReader {
  let head = '';
  let status = 0;
  let bodyLeft = -1;
  return {
    push(chunk: Buffer): boolean {
      if (bodyLeft < 0) {
        head += chunk.toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return false;
        status = Number(head.slice(9, 12));
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(head.slice(0, end));
        // Without Content-Length the body runs to the close; treat the head as enough.
        bodyLeft = m ? Number(m[1]) - (head.length - end - 4) : 0;
        head = '';
        return bodyLeft <= 0;
      }
      bodyLeft -= chunk.length;
      return bodyLeft <= 0;
    },
    get status() {
      return status;
    },
  };
}

/** The request line and headers sent by the raw clients. */
export function formatRequest(host: string, close: boolean): string {
  return `GET / HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: portico-bench\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
}
