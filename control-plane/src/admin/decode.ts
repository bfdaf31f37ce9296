import { fromJson, ScalarType, type DescField, type DescMessage, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import { ConfigError } from "../../../data-plane/src/config/errors.js";

/**
 * Decodes REST JSON into a protobuf message, refusing bad input with an error that names the field
 * by path (`targets[1].weight: must be an integer from 0 to 4294967295`). protobuf-es' own JSON
 * reader would also refuse it, but names only the message type, which a curl user cannot act on.
 * Accepts snake_case (the API's spelling) and lowerCamelCase field names, as proto3 JSON does.
 */
export function decodeJson<Desc extends DescMessage>(schema: Desc, raw: unknown, root = ""): MessageShape<Desc> {
  checkMessage(schema, raw, root);
  return fromJson(schema, raw as JsonValue, { ignoreUnknownFields: false });
}

function join(base: string, name: string): string {
  return base === "" ? name : `${base}.${name}`;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return `"${value.length > 40 ? value.slice(0, 40) + "…" : value}"`;
  return String(value);
}

function checkMessage(desc: DescMessage, raw: unknown, path: string): void {
  switch (desc.typeName) {
    // Well-known types with their own JSON shapes.
    case "google.protobuf.ListValue":
      if (!Array.isArray(raw)) throw new ConfigError(path || "(body)", `must be an array, got ${describe(raw)}`);
      return;
    case "google.protobuf.Value":
      return;
    case "google.protobuf.Struct":
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        throw new ConfigError(path || "(body)", `must be an object, got ${describe(raw)}`);
      }
      return;
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(path || "(body)", `must be a JSON object, got ${describe(raw)}`);
  }
  const byName = fieldsByJsonKey(desc);
  const seenOneofs = new Map<string, string>();
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    const field = byName.get(key);
    const fieldPath = join(path, key);
    if (field === undefined) throw new ConfigError(fieldPath, "unknown field");
    if (value === null) continue; // proto3 JSON: null means default
    if (field.oneof !== undefined) {
      const other = seenOneofs.get(field.oneof.name);
      if (other !== undefined) throw new ConfigError(fieldPath, `cannot be set together with ${join(path, other)}`);
      seenOneofs.set(field.oneof.name, key);
    }
    checkField(field, value, fieldPath);
  }
}

const keyCache = new WeakMap<DescMessage, Map<string, DescField>>();

function fieldsByJsonKey(desc: DescMessage): Map<string, DescField> {
  let map = keyCache.get(desc);
  if (map === undefined) {
    map = new Map();
    for (const f of desc.fields) {
      map.set(f.name, f);
      map.set(f.jsonName, f);
    }
    keyCache.set(desc, map);
  }
  return map;
}

function checkField(field: DescField, value: unknown, path: string): void {
  switch (field.fieldKind) {
    case "scalar":
      return checkScalar(field.scalar, value, path);
    case "enum":
      if (typeof value !== "string" && typeof value !== "number") {
        throw new ConfigError(path, `must be one of ${field.enum.values.map((v) => v.name).join(", ")}`);
      }
      return;
    case "message":
      return checkMessage(field.message, value, path);
    case "list": {
      if (!Array.isArray(value)) throw new ConfigError(path, `must be an array, got ${describe(value)}`);
      value.forEach((item, i) => {
        const itemPath = `${path}[${i}]`;
        if (item === null) throw new ConfigError(itemPath, "must not be null");
        if (field.listKind === "scalar") checkScalar(field.scalar, item, itemPath);
        else if (field.listKind === "message") checkMessage(field.message, item, itemPath);
        else if (typeof item !== "string" && typeof item !== "number") throw new ConfigError(itemPath, "must be an enum name");
      });
      return;
    }
    case "map": {
      if (typeof value !== "object" || Array.isArray(value)) {
        throw new ConfigError(path, `must be an object, got ${describe(value)}`);
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        const entryPath = `${path}.${k}`;
        if (field.mapKind === "scalar") checkScalar(field.scalar, v, entryPath);
        else if (field.mapKind === "message") checkMessage(field.message, v, entryPath);
      }
      return;
    }
  }
}

const UINT32_MAX = 4294967295;
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

function checkScalar(type: ScalarType, value: unknown, path: string): void {
  switch (type) {
    case ScalarType.STRING:
      if (typeof value !== "string") throw new ConfigError(path, `must be a string, got ${describe(value)}`);
      return;
    case ScalarType.BOOL:
      if (typeof value !== "boolean") throw new ConfigError(path, `must be true or false, got ${describe(value)}`);
      return;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return checkInteger(value, path, 0, UINT32_MAX);
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return checkInteger(value, path, INT32_MIN, INT32_MAX);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return checkInteger(value, path, 0, Number.MAX_SAFE_INTEGER);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return checkInteger(value, path, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      if (typeof value !== "number" || !Number.isFinite(value)) throw new ConfigError(path, `must be a number, got ${describe(value)}`);
      return;
    case ScalarType.BYTES:
      if (typeof value !== "string") throw new ConfigError(path, "must be a base64 string");
      return;
  }
}

function checkInteger(value: unknown, path: string, min: number, max: number): void {
  // proto3 JSON allows 64-bit integers as decimal strings; accept those too.
  const n = typeof value === "string" && /^-?\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n)) {
    throw new ConfigError(path, `must be an integer, got ${describe(value)}`);
  }
  if (n < min) throw new ConfigError(path, min === 0 ? `must be a non-negative integer, got ${n}` : `must be at least ${min}, got ${n}`);
  if (n > max) throw new ConfigError(path, `must be at most ${max}, got ${n}`);
}
