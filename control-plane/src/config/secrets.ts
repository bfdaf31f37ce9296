import { randomBytes } from "node:crypto";
import { mkdir, open, readFile } from "node:fs/promises";
import path from "node:path";

/**
 * Loads a secret (admin key, node token) from the data directory, or creates it on first start.
 * The file is created with O_EXCL and mode 0600 so a secret is never world-readable, and two
 * starts racing cannot end up with different secrets.
 */
export async function loadOrCreateSecret(dataDir: string, file: string, prefix: string): Promise<{ value: string; created: boolean }> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const p = path.join(dataDir, file);
  try {
    const value = (await readFile(p, "utf8")).trim();
    if (value === "") throw new Error(`${p} is empty: delete it to generate a new secret, or pass one explicitly`);
    return { value, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const value = `${prefix}_${randomBytes(24).toString("base64url")}`;
  let fh;
  try {
    fh = await open(p, "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return loadOrCreateSecret(dataDir, file, prefix);
    throw err;
  }
  try {
    await fh.writeFile(`${value}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { value, created: true };
}
