// Which configuration values are secrets: a plan shows that they change, never what they are.

import { describe, expect, it } from "vitest";
import { isSecretKey } from "../../../src/core/config_plan";

describe("isSecretKey", () => {
  it.each([
    "core.trust_password",
    "cloud-init.user-data",
    "cloud-init.vendor-data",
    "cloud-init.network-config",
    "user.user-data",
    "environment.DB_PASSWORD",
    "environment.API_TOKEN",
    "environment.AWS_SECRET_ACCESS_KEY",
    "environment.SSH_KEY",
    "environment.private_key",
    "user.deploy-key",
    "user.webhook_token",
    "core.bgp_routerid_secret",
    "storage.s3.secret_key",
  ])("%s is a secret", (key) => {
    expect(isSecretKey(key)).toBe(true);
  });

  it.each(["limits.memory", "boot.autostart", "environment.TZ", "environment.PATH", "user.comment", "security.nesting", "ipv4.address", "snapshots.schedule"])(
    "%s is not",
    (key) => {
      expect(isSecretKey(key)).toBe(false);
    },
  );
});
