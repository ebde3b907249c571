/**
 * Entry of the config-loading worker thread (see load-in-thread.ts): loads and
 * validates one config file and posts the LoadResult back.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadConfigFile } from './load.js';

const { file } = workerData as { file: string };
parentPort?.postMessage(await loadConfigFile(file));
