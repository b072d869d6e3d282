// The tool's version, stamped in by the bundler from package.json.

declare const __INCUS_BACKUP_VERSION__: string | undefined;

export const VERSION: string = typeof __INCUS_BACKUP_VERSION__ === "string" ? __INCUS_BACKUP_VERSION__ : "0.0.0-dev";
