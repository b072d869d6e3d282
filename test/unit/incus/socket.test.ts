// Which Incus socket the tool connects to, given flags, environment and what exists on disk.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { DEFAULT_SOCKET_PATHS, findSocket } from "../../../src/incus/socket";

const [VARLIB, RUN] = DEFAULT_SOCKET_PATHS;
const existing =
  (...paths: string[]) =>
  (p: string) =>
    paths.includes(p);

describe("findSocket", () => {
  it.each<[string, string | undefined, NodeJS.ProcessEnv, string[], string]>([
    ["--socket beats everything", "/x/explicit.sock", { INCUS_SOCKET: "/env.sock", INCUS_DIR: "/dir" }, [RUN], "/x/explicit.sock"],
    ["INCUS_SOCKET beats INCUS_DIR and defaults", undefined, { INCUS_SOCKET: "/env.sock", INCUS_DIR: "/dir" }, [RUN], "/env.sock"],
    ["INCUS_DIR beats defaults", undefined, { INCUS_DIR: "/srv/incus" }, [RUN, VARLIB], "/srv/incus/unix.socket"],
    ["Incus's own default first", undefined, {}, [RUN, VARLIB], VARLIB],
    ["/run/incus (the backup container's) when only it exists", undefined, {}, [RUN], RUN],
    ["last default when none exists", undefined, {}, [], RUN],
    ["empty --socket is ignored", "", {}, [RUN], RUN],
    ["empty INCUS_SOCKET is ignored", undefined, { INCUS_SOCKET: "" }, [RUN], RUN],
    ["empty INCUS_DIR is ignored", undefined, { INCUS_DIR: "" }, [], RUN],
  ])("%s", (_label, explicit, env, present, expected) => {
    expect(findSocket(explicit, env, existing(...present)).path).toBe(expected);
  });

  it("names every default it tried", () => {
    expect(findSocket(undefined, {}, existing()).tried).toEqual([VARLIB, RUN]);
  });

  it("is the order deploy/install.sh uses: INCUS_SOCKET, then INCUS_DIR, then the same defaults", () => {
    const script = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "../../../deploy/install.sh"), "utf8");
    const block = script.slice(script.indexOf('if [ -z "$SOCKET" ]; then'), script.indexOf("cannot find the Incus socket"));
    expect(block.indexOf("INCUS_SOCKET")).toBeLessThan(block.indexOf("INCUS_DIR"));
    const defaults = /for s in (.*); do # DEFAULT_SOCKET_PATHS/.exec(block)?.[1]?.split(" ");
    expect(defaults).toEqual([...DEFAULT_SOCKET_PATHS]);
  });

  it("does not look at the disk when told where the socket is", () => {
    const never = (p: string): boolean => {
      throw new Error(`looked at ${p}`);
    };
    expect(findSocket("/x.sock", {}, never)).toEqual({ path: "/x.sock", tried: ["/x.sock"] });
    expect(findSocket(undefined, { INCUS_SOCKET: "/e.sock" }, never)).toEqual({ path: "/e.sock", tried: ["/e.sock"] });
    expect(findSocket(undefined, { INCUS_DIR: "/d" }, never)).toEqual({ path: "/d/unix.socket", tried: ["/d/unix.socket"] });
  });
});
