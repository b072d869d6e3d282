// Finds the Incus unix socket the way Incus's own client does, with our overrides first.

import { statSync } from "node:fs";
import { join } from "node:path";

/**
 * Where Incus puts the socket: in its default INCUS_DIR, else in /run/incus (in the backup
 * container, the proxy device's). deploy/install.sh looks in the same order (a unit test checks it).
 */
export const DEFAULT_SOCKET_PATHS = ["/var/lib/incus/unix.socket", "/run/incus/unix.socket"] as const;

export interface SocketChoice {
  /** The path to connect to. */
  path: string;
  /** Every path considered, in order; errors name them when none works. */
  tried: string[];
}

/**
 * Picks the socket: an explicit path (--socket) wins, then $INCUS_SOCKET, then $INCUS_DIR/unix.socket,
 * then the first default location that exists. When none exists, the last default is returned so
 * the connection error names a real, conventional path.
 */
export function findSocket(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  exists: (path: string) => boolean = socketExists,
): SocketChoice {
  if (explicit) return { path: explicit, tried: [explicit] };
  if (env.INCUS_SOCKET) return { path: env.INCUS_SOCKET, tried: [env.INCUS_SOCKET] };
  if (env.INCUS_DIR) {
    const path = join(env.INCUS_DIR, "unix.socket");
    return { path, tried: [path] };
  }
  const tried = [...DEFAULT_SOCKET_PATHS];
  const found = tried.find((p) => exists(p));
  return { path: found ?? tried[tried.length - 1]!, tried };
}

function socketExists(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}
