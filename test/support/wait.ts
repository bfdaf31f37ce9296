/**
 * Polling with a generous cap, for end-to-end tests that must wait for something to become true
 * (a node acknowledged a version, a process logged an event) without sleeping blindly. The cap only
 * bounds a failure: a passing test returns as soon as the condition holds.
 */

/** Options of {@link waitFor}. */
export interface WaitOptions {
  /** Give up after this long (default 15 s). */
  readonly timeoutMs?: number;
  /** Pause between polls (default 25 ms). */
  readonly intervalMs?: number;
  /** Names what is awaited, for the timeout message. */
  readonly what?: string;
}

/**
 * Calls `poll` until it returns something other than `undefined` (or `false`), then returns that.
 * Errors thrown by `poll` are remembered and quoted if the wait times out (a control plane that is
 * still restarting refuses connections; that is not a failure until the cap is reached).
 */
export async function waitFor<T>(poll: () => Promise<T | undefined | false> | T | undefined | false, opts: WaitOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const intervalMs = opts.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let lastValue: unknown;
  for (;;) {
    try {
      const v = await poll();
      if (v !== undefined && v !== false) return v;
      lastValue = v;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const detail = lastError !== undefined ? `; last error: ${lastError instanceof Error ? lastError.message : String(lastError)}` : `; last value: ${String(lastValue)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? "a condition"}${detail}`);
    }
    await delay(intervalMs);
  }
}

/** A promise that resolves after `ms`. Only for pacing polls, never to wait for an event. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects with a descriptive error if `promise` has not settled within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
