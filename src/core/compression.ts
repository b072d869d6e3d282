// The compression algorithms Incus knows for backups, and the file extension each gives the archive.

export const COMPRESSIONS: Record<string, string> = {
  zstd: ".tar.zst",
  gzip: ".tar.gz",
  xz: ".tar.xz",
  bzip2: ".tar.bz2",
  lz4: ".tar.lz4",
  none: ".tar",
};

export const COMPRESSION_NAMES = Object.keys(COMPRESSIONS);
