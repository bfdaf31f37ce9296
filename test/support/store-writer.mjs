/**
 * Child process of the FileStore crash test: commits the shared workload in a loop and prints
 * "ack <version>" only after commit() resolved, so the parent knows exactly which versions were
 * acknowledged when it kills this process with SIGKILL. It runs the compiled store from dist/
 * (tsx is not a dependency; `npm test` builds first).
 *
 * Usage: node test/support/store-writer.mjs <dir> [compactAfterRecords]
 */
import { FileStore } from "../../dist/control-plane/src/store/file.js";
import { workloadMutations } from "./store-workload.mjs";

const [dir, compactAfterRecords = "8"] = process.argv.slice(2);
if (!dir) throw new Error("usage: store-writer.mjs <dir> [compactAfterRecords]");

const store = await FileStore.open(dir, {
  compactAfterRecords: Number(compactAfterRecords),
  onWarning: (warning) => process.stderr.write(`warning: ${warning.message}\n`),
});
let { version } = await store.load();
// stdout is a pipe, written synchronously on Linux: a printed ack is in the pipe before the next commit starts.
process.stdout.write(`open ${version}\n`);
for (;;) {
  version = await store.commit(version, workloadMutations(version + 1n));
  process.stdout.write(`ack ${version}\n`);
}
