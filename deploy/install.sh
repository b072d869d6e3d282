#!/usr/bin/env bash
# Deploys or updates the incus-backup container on this Incus host: profile, container, settings, image upgrade.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: deploy/install.sh --dir HOSTPATH [options]
       deploy/install.sh [--dir HOSTPATH] --repo restic:LOCATION --restic-password-file FILE [options]

Creates (or updates) an unprivileged container that backs up this Incus host on a schedule into
HOSTPATH (a NAS mount, say) or a restic repository, and prunes old versions. Safe to run again: it
changes what the options say, upgrades the container when the incus-backup image was rebuilt
(image/build.sh), and keeps the settings and the backups. The options given are the whole
configuration: an option left out goes back to its default (the restic secrets below excepted).

  --dir HOSTPATH       the backup directory on the host, mounted at /backups (required without
                       --repo; with a local restic repository, the directory that holds it)
  --repo restic:LOCATION
                       back up into a restic repository instead of the directory: a path under
                       /backups (--dir /mnt/nas --repo restic:/backups/restic), or sftp:...,
                       rest:..., s3:..., any location restic takes (put no password in it)
  --restic-password-file FILE
                       the restic repository's password (required the first time; later runs keep
                       the installed one when it is left out). Stored in the container's state
                       volume, never on a command line or in the Incus config.
  --restic-env-file FILE
                       backend credentials for restic, KEY=VALUE lines in shell syntax
                       (AWS_ACCESS_KEY_ID=..., RESTIC_REST_PASSWORD=...), stored the same way
  --ssh-dir DIR        for sftp: a directory with the ssh private key, config and known_hosts;
                       copied to the state volume, where the container's /root/.ssh points
  --name NAME          the container (default: backup); its profile is incus-backup, or
                       incus-backup-NAME for another name
  --schedule CRON      when to back up (default: "0 3 * * *"), in the host's time zone
  --keep-last N        retention, per item (restic's forget rules); defaults:
  --keep-hourly N        --keep-daily 7 --keep-weekly 4 --keep-monthly 6, the others 0 (off)
  --keep-daily N
  --keep-weekly N
  --keep-monthly N
  --keep-yearly N
  --images             include images in scheduled backups
  --notify-url URL     POST a JSON summary of each scheduled run that fails (all runs with
                       environment.INCUS_BACKUP_NOTIFY=always, see below)
  --socket PATH        the host's Incus socket (default: $INCUS_SOCKET, else $INCUS_DIR/unix.socket, else
                       /var/lib/incus/unix.socket or /run/incus/unix.socket, whichever exists)
  --nas-mode MODE      how the container writes to HOSTPATH as root:
                       shift  an idmapped mount (shift=true); the best, but NFS, CIFS, older
                              kernels and some filesystems cannot do it
                       idmap  raw.idmap "both 0 0": the container's root is the host's root on
                              HOSTPATH (and only its root; the container stays unprivileged)
                       auto   (default) shift, and idmap when the start fails, saying why

With a restic repository the container gets a custom storage volume, NAME-state in the pool of its
root disk, at /var/lib/incus-backup: the tool's local state (runs, journal, service state, lock)
and, under secrets/ (0700, files 0600), restic-password, restic.env and ssh/. It survives image
upgrades and uninstall.sh. Keep the password somewhere off this host too: without it no restore.

Other settings are environment.INCUS_BACKUP_* keys this script leaves alone, e.g.
  incus config set backup environment.INCUS_BACKUP_NOTIFY=always
  incus config set backup environment.INCUS_BACKUP_VERIFY_SCHEDULE="0 5 * * 0"
  incus restart backup
(INCUS_BACKUP_TZ, INCUS_BACKUP_PARALLEL, INCUS_BACKUP_CATCHUP, INCUS_BACKUP_VERIFY_DEEP: see the README).

Whoever holds the Incus socket is root on the host: the container gets it through a proxy device
and listens on nothing of its own.
EOF
}

IMAGE=incus-backup
NAME=backup
DIR=""
SCHEDULE="0 3 * * *"
KEEP_LAST=0
KEEP_HOURLY=0
KEEP_DAILY=7
KEEP_WEEKLY=4
KEEP_MONTHLY=6
KEEP_YEARLY=0
IMAGES=false
NOTIFY_URL=""
SOCKET=""
NAS_MODE=auto
REPO=""
PASSWORD_FILE=""
ENV_FILE=""
SSH_DIR=""
# The restic backend's local state and secrets, in the container (a custom volume: it survives
# upgrades). The tool's default INCUS_BACKUP_STATE_DIR.
STATE_DIR=/var/lib/incus-backup
SECRETS=$STATE_DIR/secrets

log() { printf '%s\n' "$*"; }
die() {
	printf 'install: error: %s\n' "$*" >&2
	exit 1
}
need() { [ -n "${2:-}" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
	opt=$1
	val=""
	case $opt in
	--*=*)
		val=${opt#*=}
		opt=${opt%%=*}
		;;
	--images | -h | --help) ;;
	--*)
		[ $# -ge 2 ] || die "$opt needs a value"
		val=$2
		shift
		;;
	esac
	shift
	case $opt in
	--dir) need "$opt" "$val"; DIR=$val ;;
	--repo) need "$opt" "$val"; REPO=$val ;;
	--restic-password-file) need "$opt" "$val"; PASSWORD_FILE=$val ;;
	--restic-env-file) need "$opt" "$val"; ENV_FILE=$val ;;
	--ssh-dir) need "$opt" "$val"; SSH_DIR=$val ;;
	--name) need "$opt" "$val"; NAME=$val ;;
	--schedule) need "$opt" "$val"; SCHEDULE=$val ;;
	--keep-last) KEEP_LAST=$val ;;
	--keep-hourly) KEEP_HOURLY=$val ;;
	--keep-daily) KEEP_DAILY=$val ;;
	--keep-weekly) KEEP_WEEKLY=$val ;;
	--keep-monthly) KEEP_MONTHLY=$val ;;
	--keep-yearly) KEEP_YEARLY=$val ;;
	--images) IMAGES=true ;;
	--notify-url) need "$opt" "$val"; NOTIFY_URL=$val ;;
	--socket) need "$opt" "$val"; SOCKET=$val ;;
	--nas-mode) need "$opt" "$val"; NAS_MODE=$val ;;
	-h | --help) usage; exit 0 ;;
	*)
		usage >&2
		die "unknown option $opt"
		;;
	esac
done

# --- checks, before anything changes ------------------------------------------------------------

[ -n "$DIR" ] || [ -n "$REPO" ] || die "--dir HOSTPATH (or --repo restic:LOCATION) is required (see --help)"
if [ -n "$DIR" ]; then
	case $DIR in /*) ;; *) DIR=$(realpath -m -- "$DIR") ;; esac
	[ -d "$DIR" ] || die "--dir $DIR is not a directory on this host (is the NAS mounted?)"
fi
LOCATION=""
if [ -n "$REPO" ]; then
	case $REPO in
	restic:?*) LOCATION=${REPO#restic:} ;;
	*) die "--repo must be restic:LOCATION (a directory is --dir HOSTPATH)" ;;
	esac
	# Everything in environment.* ends up in the database dumps the tool backs up.
	[[ ! $LOCATION =~ ://[^/@]*:[^/@]*@ ]] ||
		die "--repo: put no password in the location (it would be in the Incus config); use --restic-env-file (RESTIC_REST_PASSWORD=..., AWS_SECRET_ACCESS_KEY=...)"
	if [[ ! $LOCATION =~ ^[a-z0-9]+: ]] || [[ $LOCATION == local:* ]]; then
		# A path in the container: only the NAS mount survives an upgrade of the container.
		path=${LOCATION#local:}
		[ -n "$DIR" ] || die "--repo restic:$LOCATION is a local path: it needs --dir HOSTPATH, mounted at /backups, to hold it"
		[[ $path == /* ]] && path=$(realpath -ms -- "$path")
		[[ $path == /backups/?* ]] || die "--repo restic:$LOCATION: a local restic repository must be under /backups (--dir HOSTPATH is mounted there)"
	fi
else
	for o in "--restic-password-file:$PASSWORD_FILE" "--restic-env-file:$ENV_FILE" "--ssh-dir:$SSH_DIR"; do
		[ -z "${o#*:}" ] || die "${o%%:*} is for a restic repository: it needs --repo restic:LOCATION"
	done
fi
if [ -n "$PASSWORD_FILE" ]; then
	[ -f "$PASSWORD_FILE" ] && [ -r "$PASSWORD_FILE" ] || die "--restic-password-file $PASSWORD_FILE is not a readable file"
	grep -q '[^[:space:]]' "$PASSWORD_FILE" || die "--restic-password-file $PASSWORD_FILE is empty"
fi
if [ -n "$ENV_FILE" ]; then
	[ -f "$ENV_FILE" ] && [ -r "$ENV_FILE" ] || die "--restic-env-file $ENV_FILE is not a readable file"
	# Line numbers only: the values are secrets.
	bad=$(grep -nvE '^[[:space:]]*(#.*)?$|^(export[[:space:]]+)?[A-Za-z_][A-Za-z0-9_]*=' "$ENV_FILE" | cut -d: -f1 | head -n 1 || :)
	[ -z "$bad" ] || die "--restic-env-file $ENV_FILE: line $bad is not KEY=VALUE"
	sh -n "$ENV_FILE" 2>/dev/null || die "--restic-env-file $ENV_FILE is not valid shell syntax (quote values with spaces or \$ in single quotes)"
fi
if [ -n "$SSH_DIR" ]; then
	[ -d "$SSH_DIR" ] && [ -r "$SSH_DIR" ] || die "--ssh-dir $SSH_DIR is not a readable directory"
	[ -n "$(find "$SSH_DIR" -type f -print -quit)" ] || die "--ssh-dir $SSH_DIR holds no files"
fi
[[ $NAME =~ ^[a-zA-Z][a-zA-Z0-9-]{0,61}[a-zA-Z0-9]$|^[a-zA-Z]$ ]] || die "--name $NAME is not a valid instance name"
for k in KEEP_LAST KEEP_HOURLY KEEP_DAILY KEEP_WEEKLY KEEP_MONTHLY KEEP_YEARLY; do
	[[ ${!k} =~ ^[0-9]+$ ]] || die "--$(echo "${k,,}" | tr _ -) must be a whole number, not '${!k}'"
done
[ $((KEEP_LAST + KEEP_HOURLY + KEEP_DAILY + KEEP_WEEKLY + KEEP_MONTHLY + KEEP_YEARLY)) -gt 0 ] ||
	die "every --keep-* is 0: that policy would remove every version"
# The tool checks the expression fully at start-up (status then reports it); catch typos here.
fields=$(awk '{ print NF }' <<<"$SCHEDULE")
[[ $SCHEDULE == @* ]] || [ "$fields" = 5 ] || [ "$fields" = 6 ] ||
	die "--schedule '$SCHEDULE' is not a cron expression (5 fields: minute hour day month weekday)"
case $NAS_MODE in auto | shift | idmap) ;; *) die "--nas-mode must be auto, shift or idmap" ;; esac
case $NOTIFY_URL in "" | http://* | https://*) ;; *) die "--notify-url must be an http or https URL" ;; esac
command -v incus >/dev/null || die "the incus CLI is not installed"
incus info >/dev/null 2>&1 || die "the incus CLI cannot reach Incus (are you root or in the incus-admin group?)"
incus image info "$IMAGE" >/dev/null 2>&1 || die "no image '$IMAGE' in Incus: build and import it first with image/build.sh"
if [ -n "$REPO" ] && [ -z "$PASSWORD_FILE" ]; then
	# Kept from an earlier restic install: the state volume and the variable that points into it.
	[ "$(incus config get "$NAME" environment.RESTIC_PASSWORD_FILE 2>/dev/null)" = "$SECRETS/restic-password" ] &&
		[ -n "$(incus config device get "$NAME" state source 2>/dev/null)" ] ||
		die "--restic-password-file FILE is required to set up a restic repository (later runs keep the installed one)"
fi

if [ -z "$SOCKET" ]; then
	# The tool's order (src/incus/socket.ts, a unit test holds the two together): $INCUS_SOCKET,
	# then $INCUS_DIR/unix.socket, then the first default location that exists.
	if [ -n "${INCUS_SOCKET:-}" ]; then
		SOCKET=$INCUS_SOCKET
	elif [ -n "${INCUS_DIR:-}" ]; then
		SOCKET=$INCUS_DIR/unix.socket
	else
		for s in /var/lib/incus/unix.socket /run/incus/unix.socket; do # DEFAULT_SOCKET_PATHS
			if [ -S "$s" ]; then
				SOCKET=$s
				break
			fi
		done
	fi
	[ -n "$SOCKET" ] || die "cannot find the Incus socket on this host: pass --socket PATH"
fi
[ -S "$SOCKET" ] || die "--socket $SOCKET is not a unix socket"

PROFILE=incus-backup
[ "$NAME" = backup ] || PROFILE=incus-backup-$NAME
PROJECT=$(incus project list -f csv -c n 2>/dev/null | sed -n 's/ (current)$//p')
PROJECT=${PROJECT:-default}

redact() { sed -E 's#^([a-z]+://)([^@/]*@)?([^/?]*).*#\1\3/…#' <<<"$1"; }
yaml_str() { printf "'%s'" "${1//\'/\'\'}"; }
# The host's time zone, for schedules and retention periods in local time.
host_tz() {
	local z=""
	[ -r /etc/timezone ] && z=$(head -n 1 /etc/timezone)
	if [ -z "$z" ] && [ -L /etc/localtime ]; then z=$(readlink -f /etc/localtime | sed -n 's#^.*/zoneinfo/##p'); fi
	printf '%s' "$z"
}
snapshot() { # what a restart must pick up: the container's expanded config and devices
	incus config show "$NAME" --expanded 2>/dev/null | grep -v '^ *volatile\.' || :
}

# --- profile --------------------------------------------------------------------------------------

profile_yaml() { # MODE
	local shift_line=""
	[ "$1" = shift ] && shift_line='    shift: "true"'
	cat <<EOF
description: $(yaml_str "incus-backup: the Incus socket${DIR:+ and the backup directory} for the container $NAME")
config: {}
devices:
  incus-socket:
    type: proxy
    connect: $(yaml_str "unix:$SOCKET")
    listen: unix:/run/incus/unix.socket
    bind: container
    uid: "0"
    gid: "0"
    mode: "0660"
EOF
	[ -z "$DIR" ] || cat <<EOF
  backups:
    type: disk
    source: $(yaml_str "$DIR")
    path: /backups
$shift_line
EOF
}

PROFILE_DONE=unchanged
apply_profile() { # MODE
	local before after
	if ! incus profile show "$PROFILE" >/dev/null 2>&1; then
		incus profile create "$PROFILE" >/dev/null
		PROFILE_DONE=created
	fi
	before=$(incus profile show "$PROFILE" | sed '/^used_by:/,$d')
	profile_yaml "$1" | incus profile edit "$PROFILE"
	after=$(incus profile show "$PROFILE" | sed '/^used_by:/,$d')
	[ "$PROFILE_DONE" = created ] || [ "$before" = "$after" ] || PROFILE_DONE=updated
}

# --- container ------------------------------------------------------------------------------------

status() { incus list "^$NAME\$" -f csv -c s; }
start() { # prints incus's error on failure
	local out
	if ! out=$(incus start "$NAME" 2>&1 </dev/null); then
		printf '%s\n' "$out"
		return 1
	fi
}
# A clean stop: quick when idle; a backup in progress is abandoned without leaving anything
# partial, and caught up on at the next start.
stop() {
	[ "$(status)" = RUNNING ] || return 0
	incus stop "$NAME" --timeout 120 >/dev/null 2>&1 || incus stop "$NAME" --force >/dev/null
}
# Whether the profile already says what this run wants (devices cannot all change under a
# running container: it is stopped first when they do).
profile_matches() { # MODE
	local want_shift=""
	[ "$1" = shift ] && want_shift=true
	[ "$(incus profile device get "$PROFILE" backups source 2>/dev/null)" = "$DIR" ] &&
		[ "$(incus profile device get "$PROFILE" backups shift 2>/dev/null)" = "$want_shift" ] &&
		[ "$(incus profile device get "$PROFILE" incus-socket connect 2>/dev/null)" = "unix:$SOCKET" ]
}

CONTAINER_DONE=unchanged
EXISTS=0
incus info "$NAME" >/dev/null 2>&1 && EXISTS=1
BEFORE=$(snapshot)

# The NAS mode to try first: auto tries shift. Without a directory there is nothing to mount.
MODE=$NAS_MODE
[ "$MODE" = auto ] && MODE="shift"
[ -n "$DIR" ] || MODE=none
[ "$EXISTS" = 1 ] && ! profile_matches "$MODE" && stop
apply_profile "$MODE"

if [ "$EXISTS" = 0 ]; then
	# Unprivileged, and the default profile for the root disk (and a NIC, for notifications).
	# (Its hint about a missing network goes: the container needs none but for notifications.)
	out=$(incus init "$IMAGE" "$NAME" --profile default --profile "$PROFILE" </dev/null 2>&1) || die "cannot create $NAME: $out"
	CONTAINER_DONE=created
else
	# (Incus 7.0 indents YAML lists, 6.0 does not.)
	profiles=$(incus config show "$NAME" | sed -n '/^profiles:/,/^[a-z]/p' | sed -n 's/^[[:space:]]*- //p')
	grep -qx "$PROFILE" <<<"$profiles" || incus profile add "$NAME" "$PROFILE" >/dev/null
fi

# The storage pool of the container's root disk (the device with path /, its own or a profile's).
root_pool() {
	incus config show "$NAME" --expanded | awk '
		function flush() { if (path == "/" && pool != "" && !found) { print pool; found = 1 } path = ""; pool = "" }
		/^devices:/ { d = 1; next }
		d && /^[^ ]/ { flush(); d = 0 }
		d && /^  [^ ]/ { flush(); next }
		d && $1 == "path:" { path = $2 }
		d && $1 == "pool:" { pool = $2 }
		END { flush() }'
}

# The restic backend keeps its local state (and this script the secrets) in a custom volume: it
# survives an upgrade (a new root filesystem), a re-created container and uninstall.sh.
STATE_DONE=""
if [ -n "$REPO" ]; then
	STATE_VOLUME=$(incus config device get "$NAME" state source 2>/dev/null || :)
	if [ -n "$STATE_VOLUME" ]; then
		STATE_POOL=$(incus config device get "$NAME" state pool)
		STATE_DONE="in use"
	else
		STATE_POOL=$(root_pool)
		[ -n "$STATE_POOL" ] || die "cannot tell the storage pool of $NAME's root disk for its state volume"
		STATE_VOLUME=$NAME-state
		STATE_DONE="in use"
		if ! incus storage volume show "$STATE_POOL" "$STATE_VOLUME" >/dev/null 2>&1; then
			incus storage volume create "$STATE_POOL" "$STATE_VOLUME" >/dev/null </dev/null
			STATE_DONE=created
		fi
		# Attached while it is stopped: the volume's first mount in an unprivileged container.
		stop
		incus config device add "$NAME" state disk "pool=$STATE_POOL" "source=$STATE_VOLUME" "path=$STATE_DIR" >/dev/null </dev/null
		[ "$STATE_DONE" = created ] || STATE_DONE="attached"
	fi
fi

set_env() { # KEY VALUE: set, or unset when VALUE is empty
	if [ -n "$2" ]; then
		[ "$(incus config get "$NAME" "environment.$1")" = "$2" ] || incus config set "$NAME" "environment.$1=$2"
	elif [ -n "$(incus config get "$NAME" "environment.$1")" ]; then
		incus config unset "$NAME" "environment.$1"
	fi
}
set_env INCUS_BACKUP_SCHEDULE "$SCHEDULE"
set_env INCUS_BACKUP_KEEP_LAST "$KEEP_LAST"
set_env INCUS_BACKUP_KEEP_HOURLY "$KEEP_HOURLY"
set_env INCUS_BACKUP_KEEP_DAILY "$KEEP_DAILY"
set_env INCUS_BACKUP_KEEP_WEEKLY "$KEEP_WEEKLY"
set_env INCUS_BACKUP_KEEP_MONTHLY "$KEEP_MONTHLY"
set_env INCUS_BACKUP_KEEP_YEARLY "$KEEP_YEARLY"
set_env INCUS_BACKUP_IMAGES "$IMAGES"
set_env INCUS_BACKUP_NOTIFY_URL "$NOTIFY_URL"
if [ -n "$REPO" ]; then
	# The repository and where restic reads its password: paths, never a secret (everything in
	# environment.* is in the database dumps the tool backs up).
	set_env INCUS_BACKUP_REPO "$REPO"
	set_env INCUS_BACKUP_DIR ""
	set_env RESTIC_PASSWORD_FILE "$SECRETS/restic-password"
else
	set_env INCUS_BACKUP_REPO ""
	set_env INCUS_BACKUP_DIR /backups
	set_env RESTIC_PASSWORD_FILE ""
fi
# Scheduled runs leave the backup container itself out: it holds no data of its own.
set_env INCUS_BACKUP_SELF "$PROJECT/$NAME"
# This install's id, which the repository locks record: made once, kept by upgrades (the config
# survives `incus rebuild`). Not a secret; it tells this host's runs from another host's that
# shares the NAS, as every such container is called the same.
if ! [[ $(incus config get "$NAME" environment.INCUS_BACKUP_INSTALL_ID) =~ ^[0-9a-f]{16,64}$ ]]; then
	set_env INCUS_BACKUP_INSTALL_ID "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
fi
# The host's time zone, unless an admin chose another one.
if [ -z "$(incus config get "$NAME" environment.TZ)" ]; then
	tz=$(host_tz)
	[ -z "$tz" ] || set_env TZ "$tz"
fi
if [ "$(incus config get "$NAME" security.privileged)" = true ]; then
	incus config unset "$NAME" security.privileged
	log "made $NAME unprivileged again (security.privileged was set)"
fi
[ "$(incus config get "$NAME" security.privileged --expanded)" != true ] ||
	die "a profile of $NAME makes it privileged; the backup container must not be"
[ "$(incus config get "$NAME" boot.autostart)" = true ] || incus config set "$NAME" boot.autostart=true

set_mode() { # MODE: the container's side of the NAS mode
	if [ "$1" = idmap ]; then
		[ "$(incus config get "$NAME" raw.idmap)" = "both 0 0" ] || incus config set "$NAME" raw.idmap="both 0 0"
	elif [ -n "$(incus config get "$NAME" raw.idmap)" ]; then
		incus config unset "$NAME" raw.idmap
	fi
	if [ "$1" = none ]; then
		[ -z "$(incus config get "$NAME" user.incus-backup.nas-mode)" ] || incus config unset "$NAME" user.incus-backup.nas-mode
	else
		[ "$(incus config get "$NAME" user.incus-backup.nas-mode)" = "$1" ] || incus config set "$NAME" user.incus-backup.nas-mode="$1"
	fi
}
set_mode "$MODE"

# A rebuilt image upgrades the container: a new root filesystem, the same config, devices and
# settings. The state (last runs, schedule bookkeeping) is on the NAS, or for restic in the state
# volume with the secrets, so it survives.
want=$(incus image info "$IMAGE" | sed -n 's/^Fingerprint: //p')
have=$(incus config get "$NAME" volatile.base_image)
if [ "$CONTAINER_DONE" != created ] && [ -n "$want" ] && [ "$want" != "$have" ]; then
	log "upgrading $NAME to the image ${want:0:12} (was ${have:0:12})"
	stop
	incus rebuild "$IMAGE" "$NAME" --force </dev/null >/dev/null
	CONTAINER_DONE=upgraded
fi

AFTER=$(snapshot)
if [ "$CONTAINER_DONE" = unchanged ] && { [ "$BEFORE" != "$AFTER" ] || [ "$PROFILE_DONE" != unchanged ]; }; then
	CONTAINER_DONE=updated
fi


# The daemon reads its settings at start-up: a changed container is restarted (quick when idle;
# a backup in progress is abandoned cleanly and caught up on at start-up).
[ "$CONTAINER_DONE" = unchanged ] || stop
if [ "$(status)" != RUNNING ]; then
	if ! err=$(start); then
		reason=$(grep -iE 'idmap|shift' <<<"$err" | head -n 1 || :)
		if [ "$NAS_MODE" = auto ] && [ "$MODE" = shift ] && [ -n "$reason" ]; then
			log "shift=true does not work for $DIR here ($reason)"
			log "falling back to --nas-mode idmap: the container's root writes to $DIR as the host's root"
			MODE=idmap
			apply_profile idmap
			set_mode idmap
			err=$(start) || die "cannot start $NAME: $err"
		else
			die "cannot start $NAME: $err"
		fi
	fi
fi

# --- restic secrets ------------------------------------------------------------------------------

# Into the state volume, with `incus file push` from the file or through stdin: never on a command
# line, in a log or in the Incus config. The container runs, so the volume is mounted (a push into
# a stopped container would land in its root filesystem, which an upgrade replaces).
RESTART=0
SECRETS_DONE=""
in_ct() { incus exec "$NAME" -- "$@" </dev/null; }
# sha256 of FILE (or of the files under DIR, names and contents) in the container; empty if none.
digest_ct() { # PATH
	in_ct sh -c 'if [ -f "$1" ]; then sha256sum <"$1"; elif [ -d "$1" ]; then cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum | sha256sum; fi' - "$1" 2>/dev/null | cut -d' ' -f1 || :
}
digest_dir() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum | sha256sum | cut -d' ' -f1); }
push_secret() { # FILE NAME: 0600 root in secrets/, replaced in one rename; fails if unchanged
	[ "$(sha256sum <"$1" | cut -d' ' -f1)" != "$(digest_ct "$SECRETS/$2")" ] || return 1
	incus file push --uid 0 --gid 0 --mode 0600 "$1" "$NAME$SECRETS/.$2.new" </dev/null >/dev/null ||
		die "cannot copy $1 into $NAME"
	in_ct mv -f "$SECRETS/.$2.new" "$SECRETS/$2"
}
push_ssh() { # DIR: its files into secrets/ssh (0700, files 0600); fails if unchanged
	[ "$(digest_dir "$1")" != "$(digest_ct "$SECRETS/ssh")" ] || return 1
	(cd "$1" && find . -type f -print0 | tar --null -T - --owner=0 --group=0 --numeric-owner -cf -) |
		incus exec "$NAME" -- sh -ec 'cd "$1"; rm -rf .ssh.new .ssh.old; mkdir -m 0700 .ssh.new
			tar -xf - -C .ssh.new --no-same-owner --no-same-permissions
			find .ssh.new -type d -exec chmod 0700 {} +; find .ssh.new -type f -exec chmod 0600 {} +
			[ ! -e ssh ] || mv ssh .ssh.old; mv .ssh.new ssh; rm -rf .ssh.old' - "$SECRETS" ||
		die "cannot copy $1 into $NAME"
}
if [ -n "$REPO" ]; then
	in_ct awk -v p="$STATE_DIR" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo ||
		die "the state volume $STATE_POOL/$STATE_VOLUME is not mounted at $STATE_DIR in $NAME"
	in_ct sh -c 'chmod 0700 "$1" && mkdir -p -m 0700 "$1/secrets" && chmod 0700 "$1/secrets"' - "$STATE_DIR"
	secrets_done=()
	if [ -n "$PASSWORD_FILE" ]; then
		# restic reads the file at every call: no restart for a new one.
		if push_secret "$PASSWORD_FILE" restic-password; then secrets_done+=("restic password installed"); else secrets_done+=("restic password unchanged"); fi
	elif in_ct test -s "$SECRETS/restic-password"; then
		secrets_done+=("restic password kept")
	else
		die "no restic password in $NAME ($SECRETS/restic-password): pass --restic-password-file FILE"
	fi
	# The wrapper loads restic.env, and ssh finds /root/.ssh, when the daemon starts: a restart.
	if [ -n "$ENV_FILE" ]; then
		if push_secret "$ENV_FILE" restic.env; then secrets_done+=("restic.env installed"); RESTART=1; else secrets_done+=("restic.env unchanged"); fi
	elif in_ct test -e "$SECRETS/restic.env"; then
		secrets_done+=("restic.env kept")
	fi
	if [ -n "$SSH_DIR" ]; then
		if push_ssh "$SSH_DIR"; then secrets_done+=("ssh installed"); RESTART=1; else secrets_done+=("ssh unchanged"); fi
	elif in_ct test -d "$SECRETS/ssh"; then
		secrets_done+=("ssh kept")
	fi
	SECRETS_DONE=$(IFS=,; printf '%s' "${secrets_done[*]}" | sed 's/,/, /g')
fi

# --- repository ----------------------------------------------------------------------------------

# `init` is the only thing that makes a repository (runs and the service never do: an empty
# directory where the backups should be is more often a NAS that is not mounted; a restic
# repository is never made implicitly either). The service is pinned to this repository's id, so
# it refuses an empty or another directory (or restic repository) in its place later.
if [ -n "$DIR" ]; then
	where=$(df -P "$DIR" 2>/dev/null | awk 'NR == 2 { print $1 " mounted at " $6 }' || :)
	[ -z "$where" ] || log "backup directory $DIR is on $where"
fi
if [ -n "$REPO" ]; then
	REPO_SHOWN=$REPO
	if ! init=$(incus exec "$NAME" -- incus-backup init --repo "$REPO" --json </dev/null 2>&1); then
		die "cannot make or open the restic repository $REPO: $(grep -m 1 '^error:' <<<"$init" || printf '%s' "$init")"
	fi
else
	REPO_SHOWN=$DIR
	if ! init=$(incus exec "$NAME" -- incus-backup init --dir /backups --json </dev/null 2>&1); then
		die "cannot make $DIR a backup repository: $(grep -m 1 '^error:' <<<"$init" || printf '%s' "$init")"
	fi
fi
REPO_ID=$(sed -n 's/^ *"id": "\([0-9a-f]*\)".*/\1/p' <<<"$init")
[ -n "$REPO_ID" ] || die "incus-backup init printed no repository id: $init"
REPO_DONE="in use (id $REPO_ID)"
grep -q '"created": true' <<<"$init" && REPO_DONE="created (id $REPO_ID)"
if [ "$(incus config get "$NAME" environment.INCUS_BACKUP_REPOSITORY_ID)" != "$REPO_ID" ]; then
	# A new pin: the daemon reads it at start-up.
	incus config set "$NAME" "environment.INCUS_BACKUP_REPOSITORY_ID=$REPO_ID"
	RESTART=1
fi
if [ "$RESTART" = 1 ]; then
	[ "$CONTAINER_DONE" != unchanged ] || CONTAINER_DONE=updated
	stop
	err=$(start) || die "cannot start $NAME: $err"
fi

# --- report ------------------------------------------------------------------------------------

if [ -n "$DIR" ]; then
	log "profile $PROFILE: $PROFILE_DONE (Incus socket $SOCKET, backups $DIR at /backups, NAS mode $MODE)"
else
	log "profile $PROFILE: $PROFILE_DONE (Incus socket $SOCKET, no backup directory)"
fi
log "container $NAME: $CONTAINER_DONE, running image ${want:0:12}, unprivileged"
[ -z "$REPO" ] || log "state volume $STATE_POOL/$STATE_VOLUME: $STATE_DONE, at $STATE_DIR ($SECRETS_DONE)"
log "repository $REPO_SHOWN: $REPO_DONE"
keep="last $KEEP_LAST, hourly $KEEP_HOURLY, daily $KEEP_DAILY, weekly $KEEP_WEEKLY, monthly $KEEP_MONTHLY, yearly $KEEP_YEARLY"
log "settings: schedule \"$SCHEDULE\", keep $keep, images $IMAGES${NOTIFY_URL:+, notify $(redact "$NOTIFY_URL")}"
log ""
log "incus exec $NAME -- incus-backup status:"
# The container may have just started: give its daemon a moment to record itself (or to refuse
# its settings), so that status shows this daemon and not the one before.
for _ in $(seq 1 20); do
	rc=0
	out=$(incus exec "$NAME" -- incus-backup status --json 2>/dev/null) || rc=$?
	[ "$rc" = 2 ] && break
	grep -q '"alive": true' <<<"$out" && break
	sleep 0.5
done
rc=0
incus exec "$NAME" -- incus-backup status || rc=$?
if [ "$rc" = 2 ]; then
	die "the service refuses its settings (see above): fix the option and run this again"
fi
log ""
log "Back up now:  incus exec $NAME -- incus-backup backup --all"
log "Restore:      incus exec $NAME -- incus-backup restore --instance --name NAME --force"
log "Service log:  incus console $NAME --show-log"
if [ -n "$REPO" ]; then
	log ""
	log "IMPORTANT: keep the restic password somewhere off this host too (a password manager, a safe)."
	log "Without it no restore from $REPO is possible. Incus keeps it only in the storage volume"
	log "$STATE_POOL/$STATE_VOLUME ($SECRETS/restic-password in $NAME), which a lost host loses with it."
fi
