/**
 * Minimal, strict flag parsing for the gateway commands: every flag is declared with its help
 * text, unknown or malformed flags fail with a one-line reason, and --help prints the declarations.
 */

/** A declared flag. */
export interface FlagSpec {
  readonly name: string;
  readonly value?: string; // placeholder shown in help, e.g. "HOST:PORT"; absent for boolean flags
  readonly help: string;
  readonly required?: boolean;
  readonly default?: string;
  /** Environment variable consulted when the flag is absent. */
  readonly env?: string;
  /** May be given several times (values collected). */
  readonly repeated?: boolean;
}

/** A flag problem, reported as one line with exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export type ParsedFlags = Map<string, string[]>;

/** Parses argv against the specs; throws UsageError on anything unknown or missing. */
export function parseFlags(command: string, argv: readonly string[], specs: readonly FlagSpec[]): ParsedFlags | "help" {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const out: ParsedFlags = new Map();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") return "help";
    if (!arg.startsWith("--")) throw new UsageError(`${command}: unexpected argument "${arg}" (see --help)`);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const spec = byName.get(name);
    if (spec === undefined) throw new UsageError(`${command}: unknown flag --${name} (see --help)`);
    let value: string;
    if (spec.value === undefined) {
      if (eq !== -1) throw new UsageError(`${command}: --${name} takes no value`);
      value = "true";
    } else if (eq !== -1) {
      value = arg.slice(eq + 1);
    } else {
      if (i + 1 >= argv.length || argv[i + 1].startsWith("--")) throw new UsageError(`${command}: --${name} needs a value (${spec.value})`);
      value = argv[++i];
    }
    const list = out.get(name) ?? [];
    if (list.length > 0 && !spec.repeated) throw new UsageError(`${command}: --${name} given more than once`);
    list.push(value);
    out.set(name, list);
  }
  for (const spec of specs) {
    if (out.has(spec.name)) continue;
    const fromEnv = spec.env !== undefined ? process.env[spec.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== "") out.set(spec.name, [fromEnv]);
    else if (spec.default !== undefined) out.set(spec.name, [spec.default]);
    else if (spec.required) throw new UsageError(`${command}: --${spec.name} is required (${spec.value ?? "flag"})`);
  }
  return out;
}

/** Help text for a command. */
export function helpText(usage: string, summary: string, specs: readonly FlagSpec[]): string {
  const rows = specs.map((s) => {
    const left = `  --${s.name}${s.value ? ` ${s.value}` : ""}`;
    const notes = [s.required ? "required" : undefined, s.default !== undefined ? `default ${s.default}` : undefined, s.env ? `env ${s.env}` : undefined]
      .filter(Boolean)
      .join("; ");
    return `${left.padEnd(34)} ${s.help}${notes ? ` (${notes})` : ""}`;
  });
  return `Usage: ${usage}\n\n${summary}\n\nFlags:\n${rows.join("\n")}\n${"  --help".padEnd(34)} Show this help.\n`;
}

/** Parses "HOST:PORT" (IPv6 as "[::1]:8080"); errors name the flag. */
export function parseHostPort(flag: string, value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  if (m === null) throw new UsageError(`--${flag}: expected HOST:PORT, got "${value}"`);
  const host = m[1] ?? m[2] ?? "";
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--${flag}: port must be 0-65535, got ${port}`);
  return { host: host === "" ? "0.0.0.0" : host, port };
}

/** Parses an http(s) URL flag value. */
export function parseUrl(flag: string, value: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new UsageError(`--${flag}: not a URL: "${value}"`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new UsageError(`--${flag}: must be http:// or https://, got "${value}"`);
  return value.replace(/\/+$/, "");
}
