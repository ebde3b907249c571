/**
 * `portico hash-password`: reads a password (typed without echo on a terminal,
 * or the first line of stdin) and prints its hash for "basicAuth".
 */
import { hashPassword } from '../proxy/basic-auth.js';

/** Reads one line from a terminal without echoing it. */
function readHidden(): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write('Password: ');
  stdin.setRawMode(true);
  stdin.resume();
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') {
          done();
          return resolve(text);
        }
        if (ch === '\u0003') {
          done();
          return reject(new Error('cancelled'));
        }
        if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
        else text += ch;
      }
    };
    const done = (): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
    };
    stdin.on('data', onData);
  });
}

/** Reads stdin to its end; the password is its first line. */
async function readPiped(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
}

/** Runs the command; returns the exit code. */
export async function runHashPassword(): Promise<number> {
  const password = process.stdin.isTTY ? await readHidden() : await readPiped();
  if (password === '') {
    process.stderr.write('portico hash-password: the password is empty; type one, or pipe it on stdin (echo -n … | portico hash-password)\n');
    return 2;
  }
  process.stdout.write(`${await hashPassword(password)}\n`);
  return 0;
}
