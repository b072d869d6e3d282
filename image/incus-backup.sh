#!/bin/sh
# The incus-backup command in the image: the bundled tool on the image's Node.js, /backups by default.
: "${INCUS_BACKUP_DIR:=/backups}"
export INCUS_BACKUP_DIR
# A restic repository's credentials, which deploy/install.sh keeps in the state volume rather than
# in environment.* (that is in the database dumps): the backend's variables, and the ssh keys and
# known_hosts for sftp:.
secrets=${INCUS_BACKUP_STATE_DIR:-/var/lib/incus-backup}/secrets
if [ -r "$secrets/restic.env" ]; then
	set -a
	. "$secrets/restic.env"
	set +a
fi
if [ -d "$secrets/ssh" ] && [ ! -e /root/.ssh ] && [ ! -L /root/.ssh ]; then
	ln -s "$secrets/ssh" /root/.ssh 2>/dev/null || :
fi
exec /usr/bin/node /usr/local/lib/incus-backup/incus-backup.mjs "$@"
