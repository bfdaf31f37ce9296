import type { CompiledConfig } from "../config/compile.js";
import { retiredSequenceKeys, sequenceKeysOf } from "./keys.js";
import type { SequenceSource } from "./source.js";

/** What follows a data plane's configuration: LiveConfig's onApply hook and its current snapshot. */
export interface ConfigFeed {
  readonly current: CompiledConfig | undefined;
  onApply(listener: (config: CompiledConfig, previous: CompiledConfig | undefined) => void): () => void;
}

/**
 * Keeps a sequence source in step with the configuration: on every applied snapshot, sequences of
 * rules and upstreams that were deleted or re-versioned (a weight change included) are retired, and
 * the set of live keys is handed to the source's cleanup sweep. Returns the unsubscribe function.
 */
export function followConfig(feed: ConfigFeed, source: SequenceSource): () => void {
  if (feed.current !== undefined) source.setLiveKeys(sequenceKeysOf(feed.current));
  return feed.onApply((config, previous) => {
    source.retire(retiredSequenceKeys(previous, config));
    source.setLiveKeys(sequenceKeysOf(config));
  });
}
