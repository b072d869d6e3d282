#!/usr/bin/env bash
# Removes the incus-backup container and its profile; never the backups.
set -euo pipefail

usage() {
	cat <<'EOF2'
usage: deploy/uninstall.sh [--name NAME]

Deletes the container NAME (default: backup) and its profile (incus-backup, or incus-backup-NAME).
The backups in the directory it wrote to are left exactly as they are; the image stays too
(remove it with: incus image delete incus-backup). So does the state volume of a restic setup
(NAME-state: the restic password and the service's state), which a new install.sh picks up again.
EOF2
}

NAME=backup
while [ $# -gt 0 ]; do
	case $1 in
	--name) NAME=${2:?--name needs a value}; shift 2 ;;
	--name=*) NAME=${1#*=}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
PROFILE=incus-backup
[ "$NAME" = backup ] || PROFILE=incus-backup-$NAME

command -v incus >/dev/null || { echo "uninstall: error: the incus CLI is not installed" >&2; exit 1; }
dir=$(incus profile device get "$PROFILE" backups source 2>/dev/null || :)
state_pool=$(incus config device get "$NAME" state pool 2>/dev/null || :)
state_volume=$(incus config device get "$NAME" state source 2>/dev/null || :)
if incus info "$NAME" >/dev/null 2>&1; then
	# A clean stop first: a backup in progress is abandoned without leaving anything partial.
	incus stop "$NAME" --timeout 120 >/dev/null 2>&1 || :
	incus delete --force "$NAME" >/dev/null
	echo "removed the container $NAME"
else
	echo "no container $NAME"
fi
if incus profile show "$PROFILE" >/dev/null 2>&1; then
	if incus profile show "$PROFILE" | sed -n '/^used_by:/,$p' | grep -q '^[[:space:]]*- '; then
		echo "kept the profile $PROFILE: other instances still use it"
	else
		incus profile delete "$PROFILE" >/dev/null
		echo "removed the profile $PROFILE"
	fi
fi
echo "the backups${dir:+ in $dir} were not touched"
if [ -n "$state_volume" ]; then
	echo "kept the storage volume $state_pool/$state_volume (the restic password and the service's state); without the password no restore from that repository is possible"
	echo "  delete it, once you have the password elsewhere, with: incus storage volume delete $state_pool $state_volume"
fi
