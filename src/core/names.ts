// Validation of the names users type and Incus reports, so none can escape the backup directory.

import { UsageError } from "../errors";

/**
 * Whether a string is safe as one directory name inside the repository: not empty, no "/" or
 * NUL, no control characters, not "." or "..", at most 255 bytes. Every name that becomes a path
 * component goes through this, whatever Incus itself allows.
 */
export function safePathComponent(name: string): string | undefined {
  if (name.length === 0) return "must not be empty";
  if (name === "." || name === "..") return `"${name}" is not allowed`;
  if (name.includes("/")) return `must not contain "/"`;
  if (name.includes("\\")) return `must not contain "\\"`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return "must not contain control characters";
  if (Buffer.byteLength(name, "utf8") > 255) return "is longer than 255 bytes";
  return undefined;
}

/** Incus's rule for instance names (a hostname label). */
export function instanceNameProblem(name: string): string | undefined {
  if (name.length < 1 || name.length > 63) return "must be 1-63 characters long";
  if (!/^[A-Za-z0-9-]+$/.test(name)) return "may only contain letters, digits and hyphens";
  if (name.startsWith("-") || name.endsWith("-")) return `must not start or end with "-"`;
  if (/^\d+$/.test(name)) return "cannot be a number";
  return undefined;
}

export function checkInstanceName(name: string, what = "instance name"): string {
  const problem = instanceNameProblem(name);
  if (problem) throw new UsageError(`invalid ${what} ${quote(name)}: ${problem}`);
  return name;
}

/** Project, pool and volume names: whatever Incus accepts, as long as it is a safe path component. */
export function checkComponent(name: string, what: string): string {
  const problem = safePathComponent(name);
  if (problem) throw new UsageError(`invalid ${what} ${quote(name)}: ${problem}`);
  return name;
}

/** A volume given as NAME or POOL/NAME. */
export interface VolumeRef {
  pool?: string;
  name: string;
}

export function parseVolumeRef(text: string): VolumeRef {
  const parts = text.split("/");
  if (parts.length === 1) return { name: checkComponent(text, "volume name") };
  if (parts.length === 2) {
    return { pool: checkComponent(parts[0]!, "pool name"), name: checkComponent(parts[1]!, "volume name") };
  }
  throw new UsageError(`invalid volume ${quote(text)}: use NAME or POOL/NAME`);
}

/** Quotes a user-supplied value for an error message, making control characters visible. */
export function quote(s: string): string {
  return JSON.stringify(s);
}
