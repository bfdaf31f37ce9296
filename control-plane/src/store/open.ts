/**
 * Opens the configuration store a control plane was asked for: the embedded file store (the
 * default: nothing to run besides the control plane) or Redis, shared by control-plane replicas.
 * Store events that no caller sees (Redis lost and back, a reload after a gap) go to the log here.
 */
import type { Logger } from "pino";

import { FileStore } from "./file.js";
import { RedisStore } from "./redis.js";
import { parseRedisUrl } from "./redis-url.js";
import type { ConfigStore } from "./store.js";

/** Which store: the file store in the data directory, or Redis at a URL (see redis-url.ts). */
export type StoreChoice =
  | { readonly kind: "file" }
  | { readonly kind: "redis"; readonly url: string; readonly prefix?: string; readonly waitReplicas?: number };

/** Opens the store; the file store lives in `dataDir`. */
export async function openConfigStore(choice: StoreChoice | undefined, dataDir: string, log: Logger): Promise<ConfigStore> {
  if (choice === undefined || choice.kind === "file") return FileStore.open(dataDir);
  const store = describeStore(choice, dataDir);
  return RedisStore.open(choice.url, {
    prefix: choice.prefix,
    waitReplicas: choice.waitReplicas,
    onWarning: (err) => log.warn({ err, store }, err.message),
    onRecovered: (message) => log.info({ store }, message),
  });
}

/** The store as logs show it (a Redis URL without its password). */
export function describeStore(choice: StoreChoice | undefined, dataDir: string): string {
  return choice === undefined || choice.kind === "file" ? `file:${dataDir}` : parseRedisUrl(choice.url).display;
}
