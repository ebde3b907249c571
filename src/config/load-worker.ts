/**
 * Entry of the config-loading child process (see load-in-child.ts): loads and validates one config file,
 * sends the LoadResult back over the IPC channel, and exits.
 */
import { loadConfigFile } from './load.js';

// The parent gone, no one is waiting for the answer.
process.once('disconnect', () => process.exit(0));
const result = await loadConfigFile(process.argv[2] as string);
process.send?.(result, undefined, {}, () => process.disconnect());
