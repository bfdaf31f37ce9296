/**
 * One teardown for everything the harness started, in the order an operator would shut down:
 * clients first (the harness's HTTP agent, gRPC/Connect clients registered with
 * `onTeardown(fn, "clients")`), then the gateway processes newest first (data planes before their
 * control plane), each by PID with SIGTERM and a required exit code 0, then servers the test owns
 * (fake control planes, registered with `onTeardown(fn)`), then targets and temp dirs.
 *
 * Usage in a test file: `afterAll(teardown)` (or `afterEach(teardown)` for per-test processes).
 * It throws, failing the file, if any process did not shut down cleanly or any closer failed, after
 * having tried every step, and leaves nothing running: stragglers are SIGKILLed by PID.
 */
import { closeHttpClients } from "./http.js";
import { killAllProcesses, removeTempDirs, stopAllProcesses } from "./processes.js";
import { closeAllTargets } from "./targets.js";

type Closer = () => Promise<void> | void;

const clientClosers: Closer[] = [];
const serverClosers: Closer[] = [];

/**
 * Registers something to close at teardown: `"clients"` run before the processes stop (a client
 * holding a connection open would otherwise delay their shutdown), `"servers"` after.
 */
export function onTeardown(fn: Closer, phase: "clients" | "servers" = "servers"): void {
  (phase === "clients" ? clientClosers : serverClosers).push(fn);
}

async function runAll(closers: Closer[], errors: string[]): Promise<void> {
  // Newest first, like a stack of resources.
  for (const fn of closers.splice(0).reverse()) {
    try {
      await fn();
    } catch (err) {
      errors.push((err as Error).stack ?? String(err));
    }
  }
}

/** Stops everything the harness started; throws if anything did not stop cleanly. */
export async function teardown(): Promise<void> {
  const errors: string[] = [];
  await runAll(clientClosers, errors);
  try {
    await closeHttpClients();
  } catch (err) {
    errors.push(String(err));
  }
  try {
    await stopAllProcesses();
  } catch (err) {
    errors.push((err as Error).message);
  }
  await killAllProcesses();
  await runAll(serverClosers, errors);
  try {
    await closeAllTargets();
  } catch (err) {
    errors.push(String(err));
  }
  removeTempDirs();
  if (errors.length > 0) throw new Error(errors.join("\n\n"));
}
