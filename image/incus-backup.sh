#!/bin/sh
# The incus-backup command in the image: the bundled tool on the image's Node.js, /backups by default.
: "${INCUS_BACKUP_DIR:=/backups}"
export INCUS_BACKUP_DIR
exec /usr/bin/node /usr/local/lib/incus-backup/incus-backup.mjs "$@"
