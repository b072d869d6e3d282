#!/usr/bin/env bash
# Deploys or updates the incus-backup container on this Incus host: profile, container, settings, image upgrade.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: deploy/install.sh --dir HOSTPATH [options]

Creates (or updates) an unprivileged container that backs up this Incus host on a schedule into
HOSTPATH (a NAS mount, say), and prunes old versions. Safe to run again: it changes what the
options say, upgrades the container when the incus-backup image was rebuilt (image/build.sh),
and keeps the settings and the backups. The options given are the whole configuration: an option
left out goes back to its default.

  --dir HOSTPATH       the backup directory on the host (required); mounted at /backups
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

[ -n "$DIR" ] || die "--dir HOSTPATH is required (see --help)"
case $DIR in /*) ;; *) DIR=$(realpath -m -- "$DIR") ;; esac
[ -d "$DIR" ] || die "--dir $DIR is not a directory on this host (is the NAS mounted?)"
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
description: $(yaml_str "incus-backup: the Incus socket and the backup directory for the container $NAME")
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

# The NAS mode to try first: auto tries shift.
MODE=$NAS_MODE
[ "$MODE" = auto ] && MODE="shift"
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
set_env INCUS_BACKUP_DIR /backups
# Scheduled runs leave the backup container itself out: it holds no data of its own.
set_env INCUS_BACKUP_SELF "$PROJECT/$NAME"
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
	[ "$(incus config get "$NAME" user.incus-backup.nas-mode)" = "$1" ] || incus config set "$NAME" user.incus-backup.nas-mode="$1"
}
set_mode "$MODE"

# A rebuilt image upgrades the container: a new root filesystem, the same config, devices and
# settings. The state (last runs, schedule bookkeeping) is on the NAS, so it survives.
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

# --- repository ----------------------------------------------------------------------------------

# `init` is the only thing that makes a repository (runs and the service never do: an empty
# directory where the backups should be is more often a NAS that is not mounted). The service is
# pinned to this repository's id, so it refuses an empty or another directory in its place later.
where=$(df -P "$DIR" 2>/dev/null | awk 'NR == 2 { print $1 " mounted at " $6 }' || :)
[ -z "$where" ] || log "backup directory $DIR is on $where"
if ! init=$(incus exec "$NAME" -- incus-backup init --dir /backups --json </dev/null 2>&1); then
	die "cannot make $DIR a backup repository: $(grep -m 1 '^error:' <<<"$init" || printf '%s' "$init")"
fi
REPO_ID=$(sed -n 's/^ *"id": "\([0-9a-f]*\)".*/\1/p' <<<"$init")
[ -n "$REPO_ID" ] || die "incus-backup init printed no repository id: $init"
REPO_DONE="in use (id $REPO_ID)"
grep -q '"created": true' <<<"$init" && REPO_DONE="created (id $REPO_ID)"
if [ "$(incus config get "$NAME" environment.INCUS_BACKUP_REPOSITORY_ID)" != "$REPO_ID" ]; then
	# A new pin: the daemon reads it at start-up.
	incus config set "$NAME" "environment.INCUS_BACKUP_REPOSITORY_ID=$REPO_ID"
	stop
	err=$(start) || die "cannot start $NAME: $err"
fi

# --- report ------------------------------------------------------------------------------------

log "profile $PROFILE: $PROFILE_DONE (Incus socket $SOCKET, backups $DIR at /backups, NAS mode $MODE)"
log "container $NAME: $CONTAINER_DONE, running image ${want:0:12}, unprivileged"
log "repository $DIR: $REPO_DONE"
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
