#!/usr/bin/env bash
# Throwaway Incus-in-Incus lab for the integration tests: builds, starts, inspects and removes it.
# shellcheck disable=SC2016 # single-quoted scripts run by the lab's shell, with their own $1, $2
set -euo pipefail

usage() {
	cat <<'EOF'
usage: lab.sh COMMAND [ARGS]

  up                       bring up a kept lab, or reuse the kept one if it is healthy;
                           prints its state file
  hold [--owner PID]       bring up a throwaway lab and print its state file; remove it all when
                           stdin closes, on SIGTERM/SIGINT/SIGHUP, or when process PID dies
  down [STATE]             remove a lab and everything it created (default: the kept lab)
  status [STATE]           describe a lab and check its health (exit 1 if unhealthy)
  env [STATE] [VERSION]    print shell exports for a lab: eval "$(bash test/lab/lab.sh env)"
  json [STATE]             print the state as JSON (read by test/lab/global-setup.ts)
  prepare                  only build the cached lab rootfs and busybox image
  exec [VERSION] -- CMD..  run CMD inside the lab container
  restart-incusd [VERSION] [--kill]
                           restart the lab's main incusd (SIGTERM; --kill fakes a crash)
  server-add [VERSION] [--bare|--real] NAME
                           start an extra, empty incusd in the lab, in a network namespace of
                           its own, with a `default` dir pool and root disk (--bare: not even
                           those; --real: also the main daemon's bridge on eth0 of the default
                           profile and a btrfs pool); prints its socket
  server-remove [VERSION] NAME
                           stop and remove that extra incusd
  cluster-add [VERSION] NAME
                           a two-member cluster (node1, node2) of two extra incusd, NAME-1 and
                           NAME-2, each in its network namespace, joined over a veth pair;
                           local dir pools, a managed bridge; prints both sockets
  cluster-remove [VERSION] NAME
                           stop and remove both members
  gc                       remove throwaway labs of this PID namespace whose holder and owner
                           died, and lab temp dirs left with no state
  leftovers                list what labs left behind on this machine (temp dirs, processes,
                           mounts, loop devices, lxc locks, cgroups, containers on a host
                           Incus), except the kept labs; exit 1 if anything is found
  pointer                  print the file that names this checkout's kept lab

STATE is a state file or its directory. Without one, commands use $INCUS_BACKUP_LAB_STATE,
then the kept lab. VERSION defaults to the state's primary lab.

Environment:
  INCUS_BACKUP_LAB_VERSION  primary lab: 6.0 (default, trixie) or 7.0 (trixie-backports)
  INCUS_BACKUP_LABS         all labs to bring up, e.g. "6.0 7.0" (the primary is always added)
  INCUS_BACKUP_CACHE        cache of built rootfs/images (default <repo>/.cache/lab)
  INCUS_BACKUP_MIRROR       Debian mirror (default: the first URIs: of the apt config)
  INCUS_BACKUP_LAB_OUTER    auto (default) | private | host: where the lab containers run
  INCUS_BACKUP_LAB_POOL     storage pool for the lab on a host Incus (default: the default
                            profile's root pool)
  INCUS_BACKUP_LAB_HOST_SOCKETS
                            where to look for a host Incus (default: /var/lib/incus/unix.socket
                            /run/incus/unix.socket; $INCUS_SOCKET is deliberately not used)
  INCUS_BACKUP_LAB_TMPFS    auto (default) | 1 | 0: keep the lab's files (its temp dir: the
                            labs' disks, pools and the tests' temp files) in a tmpfs; auto
                            does so with 16 GiB of memory and 8 GiB available
EOF
}

LAB_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_HOME/../.." && pwd)
CACHE_DIR=${INCUS_BACKUP_CACHE:-$REPO_ROOT/.cache/lab}
TMP_ROOT=${TMPDIR:-/tmp}
TMP_ROOT=${TMP_ROOT%/}
# Parallel test groups (scripts/test-integration.mjs) each keep a lab of their own: group "" is
# the one `npm run lab:up` keeps, group N points at incus-backup-lab-N.state.
LAB_GROUP=${INCUS_BACKUP_LAB_GROUP:-}
[[ $LAB_GROUP =~ ^[a-z0-9]{0,8}$ ]] || { echo "lab: INCUS_BACKUP_LAB_GROUP must be up to 8 lowercase letters or digits" >&2; exit 2; }
# The kept labs are per checkout: two clones on one machine (or a clone and CI) never share, or
# take down, each other's kept lab. The key is a hash of the checkout's path.
CHECKOUT_KEY=$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-8)
POINTER=$TMP_ROOT/incus-backup-lab-$CHECKOUT_KEY${LAB_GROUP:+-$LAB_GROUP}.state
POINTER_LOCK=$TMP_ROOT/incus-backup-lab-$CHECKOUT_KEY${LAB_GROUP:+-$LAB_GROUP}.lock
KNOWN_VERSIONS="6.0 7.0"
HOST_SOCKETS=${INCUS_BACKUP_LAB_HOST_SOCKETS:-/var/lib/incus/unix.socket /run/incus/unix.socket}
INCUSD=${INCUS_BACKUP_INCUSD:-/usr/libexec/incus/incusd}

# What each lab's main daemon has beside the `default` dir pool, as a host after
# `incus admin init --auto` has it (test/lab/lab.ts exports the same names): a managed bridge
# with DHCP, on eth0 in the default profile, and a second pool of another driver. Fixed subnets:
# every lab (and extra server) has a network namespace of its own, and nothing routes out (no
# NAT, the lab container has no interface).
LAB_BRIDGE=incusbr0
# Stateful DHCPv6, so instances can have a static ipv6.address, as on hosts that hand them out.
LAB_BRIDGE_CONFIG=(ipv4.address=10.77.0.1/24 ipv4.nat=false ipv6.address=fd42:77::1/64 ipv6.nat=false ipv6.dhcp.stateful=true)
LAB_BTRFS_POOL=btrfs
# The btrfs filesystem is a sparse file on the test machine, loop-mounted there: a lab container
# has no loop devices. It is passed into the lab at this path, and the pool uses it as its source.
LAB_BTRFS_PATH=/var/lib/ibk-btrfs
LAB_BTRFS_SIZE=3G

# Our incus calls always name their socket and use the state's own client config: whatever the
# caller's CLI points at (another daemon, a remote, a project) must not leak in.
unset INCUS_DIR INCUS_SOCKET INCUS_REMOTE INCUS_PROJECT INCUS_CONF

log() { printf 'lab: %s\n' "$*" >&2 || :; }
die() {
	log "error: $*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
vkey() { printf '%s' "${1//./_}"; }
rand_hex() { od -An -N4 -tx4 /dev/urandom | tr -d ' \n'; }

is_version() { case " $KNOWN_VERSIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
check_version() { is_version "$1" || die "unknown lab version '$1' (known: $KNOWN_VERSIONS)"; }

# Primary first, then INCUS_BACKUP_LABS, without duplicates.
requested_versions() {
	local primary=${INCUS_BACKUP_LAB_VERSION:-6.0} out="" v
	check_version "$primary"
	for v in $primary ${INCUS_BACKUP_LABS:-}; do
		check_version "$v"
		case " $out " in *" $v "*) ;; *) out="$out $v" ;; esac
	done
	printf '%s\n' "${out# }"
}

mirror() {
	local m=${INCUS_BACKUP_MIRROR:-}
	if [ -z "$m" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
		m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
		m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
	fi
	[ -n "$m" ] || die "no Debian mirror in the apt configuration; set INCUS_BACKUP_MIRROR"
	printf '%s\n' "${m%/}"
}

# ---------------------------------------------------------------------------------------------
# Cache: one directory per recipe, named after a hash of it and renamed into place only when
# complete, so a killed build never leaves an entry that looks valid.

# Incus runs this as PID 1 of a lab; tini reaps the orphans `incus exec` sessions leave behind.
SBIN_INIT='#!/bin/sh
exec /usr/bin/tini -- /usr/local/sbin/lab-init
'

lab_recipe() {
	# shellcheck disable=SC2054 # the commas belong to --include
	RECIPE_ARGS=(
		--variant=minbase
		'--aptopt=APT::Install-Recommends "false"'
		'--dpkgopt=path-exclude=/usr/share/man/*'
		'--dpkgopt=path-exclude=/usr/share/doc/*'
		'--dpkgopt=path-exclude=/usr/share/locale/*'
		# incus-base is the daemon without VM support: the `incus` package adds QEMU, which
		# nested containers cannot use and which doubles the image. dnsmasq-base (only
		# recommended) runs DHCP and DNS on the lab's managed bridges; btrfs-progs is what
		# Incus's btrfs driver calls for the `btrfs` pool.
		--include=incus-base,incus-client,tini,zstd,ca-certificates,dnsmasq-base,btrfs-progs
	)
	RECIPE_SOURCES=('deb @MIRROR@ trixie main')
	case $1 in
	7.0)
		RECIPE_ARGS+=('--aptopt=APT::Default-Release "trixie-backports"')
		RECIPE_SOURCES+=('deb @MIRROR@ trixie-backports main')
		;;
	esac
}

# The mirror is left out of the key: another mirror serves the same packages.
lab_key() {
	lab_recipe "$1"
	{
		echo "lab recipe 1, version $1, arch $(uname -m)"
		printf 'arg %s\n' "${RECIPE_ARGS[@]}"
		printf 'source %s\n' "${RECIPE_SOURCES[@]}"
		printf '%s' "$SBIN_INIT"
		cat "$LAB_HOME/lab-init.sh"
	} | sha256sum | cut -c1-16
}
lab_entry() { printf '%s\n' "$CACHE_DIR/lab-$1-$(lab_key "$1")"; }

busybox_bin() {
	local b out
	for b in /bin/busybox /usr/bin/busybox; do
		[ -x "$b" ] || continue
		# The image has no libc, so only the static build (Debian's busybox-static) works there.
		out=$(LC_ALL=C ldd "$b" 2>&1) || :
		if [[ $out == *"not a dynamic executable"* ]]; then
			printf '%s\n' "$b"
			return 0
		fi
	done
	die "no static busybox found: install busybox-static (see .ci/run)"
}
busybox_key() {
	{
		echo "busybox recipe 1, arch $(uname -m)"
		sha256sum <"$(busybox_bin)"
		cat "$LAB_HOME/busybox-init.sh"
	} | sha256sum | cut -c1-16
}
busybox_entry() { printf '%s\n' "$CACHE_DIR/busybox-$(busybox_key)"; }

write_meta() { # DIR OS RELEASE DESCRIPTION
	cat >"$1/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  os: $2
  release: $3
  description: $4
EOF
	tar -C "$1" --owner=0 --group=0 --numeric-owner -czf "$1/meta.tar.gz" metadata.yaml
	rm "$1/metadata.yaml"
}

# Runs in a subshell so its lock, traps and cwd stay local; safe to run in parallel.
build_lab() (
	v=$1
	entry=$(lab_entry "$v")
	[ -d "$entry" ] && exit 0
	mkdir -p "$CACHE_DIR"
	exec 8>>"$CACHE_DIR/.lab-$v.lock"
	flock 8
	[ -d "$entry" ] && exit 0
	command -v mmdebstrap >/dev/null || die "mmdebstrap not found: install it (see .ci/run)"
	# Holding the lock, any other build dir of this version is a killed build.
	rm -rf "$CACHE_DIR/.build-lab-$v".*
	stage=$(mktemp -d "$CACHE_DIR/.build-lab-$v.XXXXXX")
	trap 'rm -rf "$stage"' EXIT
	lab_recipe "$v"
	m=$(mirror)
	sources=("${RECIPE_SOURCES[@]//@MIRROR@/$m}")
	printf '%s' "$SBIN_INIT" >"$stage/init"
	cp "$LAB_HOME/lab-init.sh" "$stage/lab-init"
	q_stage=$(printf %q "$stage")
	log "building the $v lab rootfs from $m (about a minute)"
	t0=$(now)
	if ! mmdebstrap "${RECIPE_ARGS[@]}" \
		--customize-hook="install -D -m 0755 $q_stage/lab-init \"\$1/usr/local/sbin/lab-init\"" \
		--customize-hook="install -D -m 0755 $q_stage/init \"\$1/sbin/init\"" \
		--customize-hook="dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f='\${Version}' incus-base >$q_stage/incus.version" \
		trixie "$stage/rootfs.tar.zst" "${sources[@]}" >"$stage/build.log" 2>&1; then
		tail -n 30 "$stage/build.log" >&2
		die "mmdebstrap failed for the $v lab"
	fi
	incus_version=$(cat "$stage/incus.version")
	[ -n "$incus_version" ] || die "the $v lab rootfs has no incus-base package"
	# A moved archive must fail loudly rather than test another Incus line than asked for.
	case $incus_version in
	"$v".*) ;;
	*) die "the $v lab recipe installed Incus $incus_version" ;;
	esac
	write_meta "$stage" debian trixie "incus-backup lab, Incus $incus_version"
	rm -f "$stage/init" "$stage/lab-init" "$stage/build.log"
	mv "$stage" "$entry"
	trap - EXIT
	for old in "$CACHE_DIR/lab-$v-"*; do
		[ "$old" = "$entry" ] || rm -rf "$old"
	done
	log "built the $v lab rootfs (Incus $incus_version) in $(since "$t0")"
)

build_busybox() (
	bb=$(busybox_bin)
	entry=$(busybox_entry)
	[ -d "$entry" ] && exit 0
	mkdir -p "$CACHE_DIR"
	exec 8>>"$CACHE_DIR/.busybox.lock"
	flock 8
	[ -d "$entry" ] && exit 0
	rm -rf "$CACHE_DIR/.build-busybox".*
	stage=$(mktemp -d "$CACHE_DIR/.build-busybox.XXXXXX")
	trap 'rm -rf "$stage"' EXIT
	root=$stage/root
	mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,root,run,etc,var/tmp}
	chmod 1777 "$root/tmp" "$root/var/tmp"
	chmod 0700 "$root/root"
	cp "$bb" "$root/bin/busybox"
	for applet in $("$bb" --list); do
		# A link named busybox would point at itself.
		[ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
	done
	install -m 0755 "$LAB_HOME/busybox-init.sh" "$root/sbin/init"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"
	tar -C "$root" --owner=0 --group=0 --numeric-owner -czf "$stage/rootfs.tar.gz" .
	rm -rf "$root"
	write_meta "$stage" busybox "$("$bb" 2>&1 | awk 'NR == 1 { print $2 }')" "incus-backup test image (busybox)"
	mv "$stage" "$entry"
	trap - EXIT
	for old in "$CACHE_DIR/busybox-"*; do
		[ "$old" = "$entry" ] || rm -rf "$old"
	done
)

# Builds whatever is missing, all at once: two mmdebstrap runs overlap well on network waits.
build_all() { # VERSION...
	local pids=() v p fail=0
	for v in "$@"; do
		[ -d "$(lab_entry "$v")" ] && continue
		build_lab "$v" &
		pids+=($!)
	done
	if [ ! -d "$(busybox_entry)" ]; then
		build_busybox &
		pids+=($!)
	fi
	for p in "${pids[@]}"; do wait "$p" || fail=1; done
	[ "$fail" = 0 ] || log "error: building the lab images failed"
	return "$fail"
}

# ---------------------------------------------------------------------------------------------
# State: a sourceable KEY=VALUE file in the lab's own temp dir. It is written before each thing
# is created, so `down` finds everything even when `up` died half-way.

STATE_DIR=
STATE_FILE=

resolve_state() { # [STATE]
	local s=${1:-${INCUS_BACKUP_LAB_STATE:-}}
	if [ -z "$s" ] && [ -f "$POINTER" ]; then s=$(cat "$POINTER"); fi
	[ -n "$s" ] || return 1
	[ -d "$s" ] && s=${s%/}/state
	STATE_FILE=$s
	STATE_DIR=$(dirname "$s")
}
state_load() {
	local v
	for v in ${!IBK_@}; do unset "$v"; done
	if [ -f "$STATE_FILE" ]; then
		# shellcheck disable=SC1090
		. "$STATE_FILE"
	fi
}
state_set() { # KEY VALUE
	{
		if [ -f "$STATE_FILE" ]; then grep -v "^$1=" "$STATE_FILE" || :; fi
		printf '%s=%q\n' "$1" "$2"
	} >"$STATE_FILE.tmp"
	mv "$STATE_FILE.tmp" "$STATE_FILE"
	printf -v "$1" '%s' "$2"
}
state_del() { # KEY
	[ -f "$STATE_FILE" ] || return 0
	grep -v "^$1=" "$STATE_FILE" >"$STATE_FILE.tmp" || :
	mv "$STATE_FILE.tmp" "$STATE_FILE"
	unset "$1"
}
# Serialises up/down/server-* on one lab. Children never keep fd 9: the daemon gets it closed.
LOCKED=0
lock_state() {
	[ "$LOCKED" = 0 ] || return 0
	exec 9>>"$STATE_DIR/lock"
	flock 9
	LOCKED=1
}
unlock_state() {
	exec 9>&-
	LOCKED=0
}
# Serialises the commands that create or remove the kept lab.
lock_pointer() {
	mkdir -p "$TMP_ROOT"
	while :; do
		exec 7>>"$POINTER_LOCK"
		flock 7
		# down deletes the lock file with the kept lab; a lock on a deleted file guards nothing.
		if [ /proc/self/fd/7 -ef "$POINTER_LOCK" ]; then return 0; fi
		exec 7>&-
	done
}

# The lab's files in memory: a tmpfs mounted at its temp dir, which `teardown` unmounts. Every
# lab creates and deletes files all the time (an instance is some 280 inodes, made and removed
# again by each create, restore and delete), and the suite's temp files come and go with it.
# On an ext4 without a journal (as on the machines this project is developed on), each new inode
# costs a scan past the inodes deleted in the last minutes (ext4 skips reusing those when it has
# no journal): 0.3-0.8 ms of CPU each during a full run, 20 us on a quiet disk, 5 us on tmpfs;
# 5.2% of all samples of a full run were in ext4's inode allocator (2026-12-08). A lab holds
# 1-2 GiB.
lab_tmpfs() { # DIR
	local want=${INCUS_BACKUP_LAB_TMPFS:-auto} total avail
	LAB_TMPFS=0
	case $want in
	0) return 0 ;;
	1) ;;
	auto)
		total=$(awk '/^MemTotal:/ { print int($2 / 1048576) }' /proc/meminfo)
		avail=$(awk '/^MemAvailable:/ { print int($2 / 1048576) }' /proc/meminfo)
		[ "${total:-0}" -ge 15 ] && [ "${avail:-0}" -ge 8 ] || return 0
		;;
	*) die "INCUS_BACKUP_LAB_TMPFS must be auto, 1 or 0" ;;
	esac
	# A quarter of the memory at most: four test groups, four labs.
	mount -t tmpfs -o mode=0700,size=25% ibk-lab "$1" || die "cannot mount a tmpfs at $1 (INCUS_BACKUP_LAB_TMPFS=0 keeps the lab on disk)"
	LAB_TMPFS=1
}

new_state() { # KEEP
	mkdir -p "$TMP_ROOT"
	STATE_DIR=$(mktemp -d "$TMP_ROOT/ibk-lab.XXXXXX")
	STATE_DIR=$(realpath "$STATE_DIR")
	lab_tmpfs "$STATE_DIR"
	STATE_FILE=$STATE_DIR/state
	mkdir -p "$STATE_DIR/conf"
	# The tests' temp files (TMPDIR, see global-setup.ts) go with the lab. A test that runs the
	# tool as another user makes a directory there for it, so that user may pass through the
	# state dir (0711: not list it); what is in it is root's (the sockets 0660, the disks 0600).
	mkdir -p "$STATE_DIR/tmp"
	chmod 1777 "$STATE_DIR/tmp"
	chmod 0711 "$STATE_DIR"
	# Only the local remote: there is no network to image servers, and a missing config makes
	# the CLI print a first-run banner.
	printf 'default-remote: local\nremotes:\n  local:\n    addr: unix://\n    protocol: incus\n    public: false\naliases: {}\n' \
		>"$STATE_DIR/conf/config.yml"
	state_load
	state_set IBK_FORMAT 1
	state_set IBK_KEEP "$1"
	state_set IBK_TMPFS "$LAB_TMPFS"
	state_set IBK_HOLDER_PID $$
	# With the PID alone, gc would take a lab for abandoned when its holder is in another PID
	# namespace (a CI container sharing /tmp) or its PID was reused; see proc_is.
	state_set IBK_PIDNS "$(pid_ns)"
	state_set IBK_HOLDER_START "$(proc_start $$)"
}
lab_versions() { # versions with a lab recorded in the state, in bring-up order
	printf '%s\n' "${IBK_LABS:-}"
}
lab_var() { # FIELD VERSION -> value of IBK_<FIELD>_<vkey>
	local n
	n=IBK_$1_$(vkey "$2")
	printf '%s' "${!n:-}"
}

pid_alive() { # PID: running and not a zombie
	local st
	[ -n "${1:-}" ] || return 1
	st=$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}
pid_ns() { readlink /proc/self/ns/pid; }
proc_start() { # PID -> its start time (clock ticks since boot), empty when it is gone
	local st rest
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	rest=${st##*) }
	read -r -a st <<<"$rest"
	printf '%s' "${st[19]:-}"
}
proc_is() { # PID START: that very process is alive (not a zombie, not a reused PID)
	pid_alive "$1" && [ -n "${2:-}" ] && [ "$(proc_start "$1")" = "$2" ]
}
# No `| grep -q` in this file: under pipefail, grep quitting early fails the pipeline (SIGPIPE).
# Sets CMDLINE to the command line of PID, without forking: sweeps read every process.
read_cmdline() {
	local args=()
	CMDLINE=""
	{ mapfile -d '' -t args <"/proc/$1/cmdline"; } 2>/dev/null || return 1
	CMDLINE="${args[*]}"
}
pid_is_incusd() { read_cmdline "$1" && [[ $CMDLINE == *incusd* ]]; }
wait_gone() { # PID SECONDS
	local i=0
	while pid_alive "$1"; do
		[ "$i" -ge $(($2 * 10)) ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# ---------------------------------------------------------------------------------------------
# Talking to the daemons.

# Bounded, so a wedged daemon cannot hang a test run; stdin closed, because several commands
# (storage create, config edit) read YAML from a stdin that is not a terminal.
incus_at() { # SOCKET ARGS...
	local s=$1
	shift
	INCUS_SOCKET=$s INCUS_CONF=$STATE_DIR/conf timeout "${INCUS_TIMEOUT:-300}" incus "$@" </dev/null
}
# Shows the output only when the command fails (incus start chatters about missing networks).
quiet() {
	local out
	if ! out=$("$@" 2>&1); then
		printf '%s\n' "$out" >&2
		return 1
	fi
}
outer() { incus_at "$IBK_OUTER_SOCKET" "$@"; }
inner() { # VERSION ARGS...
	local s
	s=$(lab_var SOCKET "$1")
	shift
	incus_at "$s" "$@"
}

find_host_incus() {
	local s
	for s in $HOST_SOCKETS; do
		[ -S "$s" ] || continue
		if INCUS_TIMEOUT=10 incus_at "$s" info >/dev/null 2>&1; then
			printf '%s\n' "$s"
			return 0
		fi
	done
	return 1
}

outer_healthy() {
	[ -n "${IBK_OUTER_SOCKET:-}" ] || return 1
	if [ "${IBK_OUTER:-}" = private ]; then pid_alive "${IBK_OUTER_PID:-}" || return 1; fi
	INCUS_TIMEOUT=15 outer info >/dev/null 2>&1
}

# Runs the private incusd as its child and reaps it and every orphan that ends up below it
# (liblxc double-forks the container monitors). Where PID 1 does not reap (some CI sandboxes),
# they would otherwise stay behind as zombies. perl is essential in Debian; prctl's syscall
# number is per architecture.
REAPER='
use POSIX ();
my $nr = { x86_64 => 157, aarch64 => 167 }->{(POSIX::uname())[4]};
syscall($nr, 36, 1, 0, 0, 0) if defined $nr;    # PR_SET_CHILD_SUBREAPER
my $pidfile = shift @ARGV;
$0 = "ibk-lab-reaper @ARGV";    # what ps shows
my $pid = fork() // die "fork: $!";
if ($pid == 0) { exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!" }
open(my $fh, ">", "$pidfile.tmp") or die; print $fh "$pid\n"; close($fh); rename("$pidfile.tmp", $pidfile);
$SIG{$_} = sub { kill $_[0], $pid } for qw(TERM INT HUP);
while (1) { last if wait() == -1 && $!{ECHILD} }
'

outer_up() {
	local mode=${INCUS_BACKUP_LAB_OUTER:-auto} host="" t0
	case $mode in
	auto | host)
		host=$(find_host_incus) || host=""
		[ -n "$host" ] || [ "$mode" = auto ] || die "INCUS_BACKUP_LAB_OUTER=host, but no Incus answers on $HOST_SOCKETS"
		;;
	private) ;;
	*) die "INCUS_BACKUP_LAB_OUTER must be auto, private or host" ;;
	esac
	if [ -n "$host" ]; then
		state_set IBK_OUTER host
		state_set IBK_OUTER_SOCKET "$host"
		local pool=${INCUS_BACKUP_LAB_POOL:-}
		[ -n "$pool" ] || pool=$(INCUS_TIMEOUT=15 outer profile device get default root pool 2>/dev/null) || pool=""
		[ -n "$pool" ] || pool=$(INCUS_TIMEOUT=15 outer storage list -f csv -c n 2>/dev/null | awk 'NR == 1') || pool=""
		[ -n "$pool" ] || die "the Incus on $host has no storage pool; set INCUS_BACKUP_LAB_POOL"
		state_set IBK_POOL "$pool"
		log "outer layer: the Incus on $host (pool $pool); only ibk-lab-* containers are created there"
		return 0
	fi
	[ "$(id -u)" = 0 ] || die "starting a private Incus daemon needs root (or an Incus daemon reachable on $HOST_SOCKETS)"
	[ -x "$INCUSD" ] || die "$INCUSD not found: install incus from bookworm-backports (see .ci/run)"
	t0=$(now)
	[ -d /run/lxc ] || state_set IBK_RUN_LXC_CREATED 1
	# liblxc parks monitors in an lxc.pivot cgroup when containers stop, and leaves it there.
	if ! compgen -G '/sys/fs/cgroup/lxc.pivot' >/dev/null && ! compgen -G '/sys/fs/cgroup/*/lxc.pivot' >/dev/null; then
		state_set IBK_PIVOT_CREATED 1
	fi
	state_set IBK_OUTER private
	state_set IBK_OUTER_DIR "$STATE_DIR/outer"
	state_set IBK_OUTER_SOCKET "$STATE_DIR/outer/unix.socket"
	state_set IBK_POOL default
	mkdir -p "$IBK_OUTER_DIR"
	# Its own session, so a Ctrl-C aimed at the test run cannot kill it before the labs are gone.
	# incusd refuses to start when INCUS_SOCKET points at another live daemon.
	setsid perl -e "$REAPER" "$STATE_DIR/outer.pid" \
		env -u INCUS_SOCKET INCUS_DIR="$IBK_OUTER_DIR" "$INCUSD" --group root \
		--logfile "$IBK_OUTER_DIR/incusd.log" \
		</dev/null >>"$STATE_DIR/outer-incusd.out" 2>&1 7>&- 8>&- 9>&- &
	state_set IBK_REAPER_PID $!
	while [ ! -s "$STATE_DIR/outer.pid" ]; do
		pid_alive "$IBK_REAPER_PID" || die "cannot start incusd: $(cat "$STATE_DIR/outer-incusd.out")"
		sleep 0.05
	done
	state_set IBK_OUTER_PID "$(cat "$STATE_DIR/outer.pid")"
	if ! INCUS_TIMEOUT=70 outer admin waitready --timeout 60 >/dev/null; then
		tail -n 20 "$IBK_OUTER_DIR/incusd.log" "$STATE_DIR/outer-incusd.out" >&2 || :
		die "the private incusd did not come up"
	fi
	outer storage create default dir >/dev/null
	log "outer layer: private incusd $(outer version | awk '/^Server/ { print $3 }') in $IBK_OUTER_DIR, up in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# Labs.

# Names and paths are fixed and recorded first, so the creation can run in parallel subshells.
lab_plan() { # VERSION
	local v=$1 k r
	k=$(vkey "$v")
	r=$(rand_hex)
	state_set "IBK_LAB_$k" "ibk-lab-$r-v${k//_/}"
	state_set "IBK_SOCKET_$k" "$STATE_DIR/v$k.sock"
	state_set "IBK_KEY_$k" "$(lab_key "$v")"
	# The mount point of its btrfs filesystem; the file beside it is "<mount point>.img".
	state_set "IBK_BTRFS_$k" "$STATE_DIR/btrfs-v$k"
	if [ "$IBK_OUTER" = host ]; then state_set "IBK_IMAGE_$k" "ibk-lab-image-$r"; fi
	case " ${IBK_LABS:-} " in *" $v "*) ;; *) state_set IBK_LABS "${IBK_LABS:+$IBK_LABS }$v" ;; esac
}

# Loop-mounting needs root and mkfs.btrfs on the test machine, on a host Incus too.
btrfs_check() {
	[ "$(id -u)" = 0 ] || die "the lab's btrfs pool needs root: it loop-mounts a file on this machine"
	command -v mkfs.btrfs >/dev/null || die "mkfs.btrfs not found: install btrfs-progs (see scripts/setup.sh)"
}

mounted_at() { # PATH: something is mounted there (in this mount namespace)
	awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo
}

btrfs_create() { # VERSION; the path is recorded in the state already
	local mnt
	mnt=$(lab_var BTRFS "$1")
	[ -n "$mnt" ] || die "no btrfs path recorded for the $1 lab"
	rm -f "$mnt.img"
	truncate -s "$LAB_BTRFS_SIZE" "$mnt.img"
	# The state dir is 0711 (see lab_tmpfs): the disk is root's alone.
	chmod 0600 "$mnt.img"
	quiet mkfs.btrfs -q "$mnt.img" || die "mkfs.btrfs failed for the $1 lab"
	mkdir -p "$mnt"
	# mount picks a free loop device and sets it to detach itself when the filesystem is
	# unmounted: there is no loop device to remove separately.
	mount -o loop "$mnt.img" "$mnt" || die "cannot loop-mount the btrfs file of the $1 lab"
}

btrfs_remove() { # VERSION
	local mnt
	mnt=$(lab_var BTRFS "$1")
	[ -n "$mnt" ] || return 0
	if mounted_at "$mnt"; then
		if ! umount "$mnt" 2>/dev/null; then
			# Still held (a lab process that outlived its container?): detach it now, and the
			# loop device goes when the last user does.
			log "warning: $mnt is busy; unmounting it lazily"
			umount -l "$mnt" || return 1
		fi
	fi
	rm -f "$mnt.img"
	rmdir "$mnt" 2>/dev/null || :
	[ ! -e "$mnt" ] || {
		log "warning: cannot remove $mnt"
		return 1
	}
}

lab_create() ( # VERSION; in a subshell: it runs in parallel with the other lab
	v=$1
	t0=$(now)
	name=$(lab_var LAB "$v")
	sock=$(lab_var SOCKET "$v")
	entry=$(lab_entry "$v")
	bb=$(busybox_entry)
	image=$(lab_var IMAGE "$v")
	[ -n "$image" ] || image=$name
	# On a shared Incus, a concurrent run may hold the same image (same fingerprint) for a
	# moment; it deletes it right after use.
	tries=0
	until quiet outer image import "$entry/meta.tar.gz" "$entry/rootfs.tar.zst" --alias "$image"; do
		tries=$((tries + 1))
		if [ "$IBK_OUTER" != host ] || [ "$tries" -ge 10 ]; then die "cannot import the $v lab image"; fi
		sleep 3
	done
	# No profiles: on a user's Incus the default profile may carry NICs or limits we must not use.
	# Privileged, because idmapped mounts (disk devices with shift=true) cannot be made inside
	# a user namespace; the lab is a throwaway, so root-equals-root is acceptable.
	quiet outer init "$image" "$name" --no-profiles --storage "$IBK_POOL" \
		-c security.nesting=true -c security.privileged=true \
		-c user.incus-backup.lab="$STATE_DIR" >/dev/null
	outer image delete "$image"
	outer config device add "$name" insock proxy \
		"listen=unix:$sock" connect=unix:/var/lib/incus/unix.socket bind=host \
		"uid=$(id -u)" "gid=$(id -g)" mode=0660 >/dev/null
	btrfs_create "$v"
	outer config device add "$name" btrfs disk "source=$(lab_var BTRFS "$v")" "path=$LAB_BTRFS_PATH" >/dev/null
	quiet outer start "$name"
	if ! INCUS_TIMEOUT=70 inner "$v" admin waitready --timeout 60; then
		outer exec "$name" -- tail -n 20 /var/log/incus/incusd.log >&2 || :
		die "the inner incusd of the $v lab did not come up"
	fi
	inner "$v" storage create default dir >/dev/null
	inner "$v" profile device add default root disk pool=default path=/ >/dev/null
	# An existing btrfs mount as the source: Incus uses it as it is (no loop file of its own).
	quiet inner "$v" storage create "$LAB_BTRFS_POOL" btrfs "source=$LAB_BTRFS_PATH" ||
		die "cannot create the btrfs pool in the $v lab"
	quiet inner "$v" network create "$LAB_BRIDGE" "${LAB_BRIDGE_CONFIG[@]}" ||
		die "cannot create the $LAB_BRIDGE network in the $v lab"
	inner "$v" profile device add default eth0 nic "network=$LAB_BRIDGE" name=eth0 >/dev/null
	inner "$v" image import "$bb/meta.tar.gz" "$bb/rootfs.tar.gz" --alias busybox >/dev/null
	server=$(inner "$v" version | awk '/^Server/ { print $3 }')
	case $server in
	"$v".*) ;;
	*) die "the $v lab runs Incus $server" ;;
	esac
	log "lab $v: Incus $server in $name, up in $(since "$t0")"
)

lab_healthy() { # VERSION
	local v=$1 name sock
	name=$(lab_var LAB "$v")
	sock=$(lab_var SOCKET "$v")
	[ -n "$name" ] && [ -S "$sock" ] || return 1
	# A changed recipe (lab-init, packages) means the kept lab no longer is what the tests expect.
	[ "$(lab_var KEY "$v")" = "$(lab_key "$v")" ] || return 1
	[[ $(INCUS_TIMEOUT=15 outer list "^$name\$" -f csv -c s 2>/dev/null) == RUNNING ]] || return 1
	# A lab from before the bridge and the btrfs pool (or one whose btrfs mount went) is outdated.
	local mnt
	mnt=$(lab_var BTRFS "$v")
	[ -n "$mnt" ] && mounted_at "$mnt" || return 1
	INCUS_TIMEOUT=15 inner "$v" image info busybox >/dev/null 2>&1 || return 1
	INCUS_TIMEOUT=15 inner "$v" storage show "$LAB_BTRFS_POOL" >/dev/null 2>&1 || return 1
	[[ $(INCUS_TIMEOUT=15 inner "$v" profile device get default eth0 network 2>/dev/null) == "$LAB_BRIDGE" ]]
}

lab_remove() { # VERSION
	local v=$1 k name image
	k=$(vkey "$v")
	name=$(lab_var LAB "$v")
	image=$(lab_var IMAGE "$v")
	if [ -n "$name" ]; then
		INCUS_TIMEOUT=120 outer delete --force "$name" >/dev/null 2>&1 || :
		if INCUS_TIMEOUT=15 outer info "$name" >/dev/null 2>&1; then
			log "warning: could not delete the lab container $name"
			return 1
		fi
	fi
	# The image is deleted right after the container is made; this is for an up that died between.
	if [ -n "$image" ]; then INCUS_TIMEOUT=60 outer image delete "$image" >/dev/null 2>&1 || :; fi
	# Only now that no container uses it.
	btrfs_remove "$v" || return 1
	rm -f "$STATE_DIR/v$k".sock "$STATE_DIR/v$k"-*.sock
	local var
	for var in ${!IBK_SERVER_@}; do
		case $var in "IBK_SERVER_${k}_"*) state_del "$var" ;; esac
	done
	state_del "IBK_LAB_$k"
	state_del "IBK_SOCKET_$k"
	state_del "IBK_KEY_$k"
	state_del "IBK_IMAGE_$k"
	state_del "IBK_VERSION_$k"
	state_del "IBK_BTRFS_$k"
}

# Brings every requested lab up in the current state, reusing healthy ones. Call it plainly,
# not under `||`, which would switch off `set -e` inside it.
LAB_JOBS=()
bring_up() { # VERSION...
	local v missing=() p fail=0 t0 builds
	t0=$(now)
	[ -n "${IBK_PRIMARY:-}" ] || state_set IBK_PRIMARY "$1"
	for v in "$@"; do
		if [ -n "$(lab_var LAB "$v")" ] && lab_healthy "$v"; then
			log "lab $v: reusing $(lab_var LAB "$v")"
		else
			missing+=("$v")
		fi
	done
	[ "${#missing[@]}" -gt 0 ] || return 0
	btrfs_check
	# The builds must not hold the state lock: an interrupted run tears down without them.
	build_all "${missing[@]}" 7>&- 9>&- &
	builds=$!
	if [ -z "${IBK_OUTER:-}" ]; then outer_up; fi
	wait "$builds" || return 1
	for v in "${missing[@]}"; do
		if [ -n "$(lab_var LAB "$v")" ]; then
			log "lab $v: $(lab_var LAB "$v") is unhealthy or outdated; replacing it"
			lab_remove "$v" || return 1
		fi
		lab_plan "$v"
	done
	for v in "${missing[@]}"; do
		lab_create "$v" &
		LAB_JOBS+=($!)
	done
	for p in "${LAB_JOBS[@]}"; do wait "$p" || fail=1; done
	if [ "$fail" != 0 ]; then
		log "error: a lab did not come up"
		return 1
	fi
	for v in "${missing[@]}"; do
		state_set "IBK_VERSION_$(vkey "$v")" "$(inner "$v" version | awk '/^Server/ { print $3 }')"
	done
	log "labs up in $(since "$t0")"
}

# ---------------------------------------------------------------------------------------------
# Teardown.

# The temp dir, and the tmpfs at it if there is one (after unmount_under).
remove_state_dir() { # DIR
	if mounted_at "$1"; then
		umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || log "warning: cannot unmount $1"
	fi
	rm -rf "$1"
}

unmount_under() { # DIR
	local m
	# Deepest first; mountinfo's 5th field is the mount point.
	while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
	done < <(awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}

# After the private daemon is gone: kills what a dead or killed daemon left running (helpers,
# monitors, the labs' processes). After a clean shutdown it finds nothing.
sweep_processes() {
	local p v name cg killed=0 re='^([^ ]*incusd |\[lxc monitor\] )' names=() cgroups=()
	for v in $(lab_versions); do
		name=$(lab_var LAB "$v")
		[ -z "$name" ] || names+=("$name")
	done
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[ "$p" = $$ ] && continue
		read_cmdline "$p" || continue
		if [[ $CMDLINE =~ $re && $CMDLINE == *"$STATE_DIR/"* ]]; then
			kill -KILL "$p" 2>/dev/null && killed=$((killed + 1))
			continue
		fi
		{ mapfile -t cgroups <"/proc/$p/cgroup"; } 2>/dev/null || continue
		for name in "${names[@]}"; do
			if [[ "${cgroups[*]}" == *"lxc.payload.$name"* ]]; then
				kill -KILL "$p" 2>/dev/null && killed=$((killed + 1))
				break
			fi
		done
	done
	[ "$killed" = 0 ] || log "killed $killed leftover process(es) of the lab"
	[ "$killed" = 0 ] || sleep 0.2
	for name in "${names[@]}"; do
		while read -r cg; do rmdir "$cg" 2>/dev/null || :; done < <(
			find /sys/fs/cgroup -depth -type d \( -path "*/lxc.payload.$name*" -o -path "*/lxc.monitor.$name*" \) 2>/dev/null
		)
	done
}

outer_stop() {
	local pid=${IBK_OUTER_PID:-}
	if pid_alive "$pid" && pid_is_incusd "$pid"; then
		INCUS_TIMEOUT=60 outer admin shutdown --timeout 30 >/dev/null 2>&1 || :
		if ! wait_gone "$pid" 30; then
			log "warning: incusd $pid did not shut down; killing it"
			kill -TERM "$pid" 2>/dev/null || :
			wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || :
			wait_gone "$pid" 5 || :
		fi
	fi
	sweep_processes
	# The reaper ends once incusd and every orphan below it are gone; when this shell started it
	# (hold), reap the reaper too.
	if [ -n "${IBK_REAPER_PID:-}" ]; then
		wait_gone "$IBK_REAPER_PID" 10 || log "warning: the reaper $IBK_REAPER_PID still waits for a child"
		wait "$IBK_REAPER_PID" 2>/dev/null || :
	fi
}

clean_run_lxc() {
	local d=/run/lxc/lock$IBK_OUTER_DIR
	rm -rf "$d"
	d=$(dirname "$d")
	while [ "$d" != /run/lxc/lock ] && [ "$d" != / ]; do
		rmdir "$d" 2>/dev/null || break
		d=$(dirname "$d")
	done
	if [ "${IBK_RUN_LXC_CREATED:-}" = 1 ]; then rmdir /run/lxc/lock /run/lxc 2>/dev/null || :; fi
	# rmdir only removes an empty, unused cgroup; liblxc makes it again when it needs one.
	if [ "${IBK_PIVOT_CREATED:-}" = 1 ]; then
		rmdir /sys/fs/cgroup/lxc.pivot /sys/fs/cgroup/*/lxc.pivot 2>/dev/null || :
	fi
}

# Removes everything the loaded state records. Tolerates a half-made state; safe to repeat.
teardown() {
	local v ok=0 t0
	t0=$(now)
	if [ -n "${IBK_OUTER:-}" ]; then
		if outer_healthy || [ "$IBK_OUTER" = host ]; then
			for v in $(lab_versions); do lab_remove "$v" || ok=1; done
		fi
		if [ "$IBK_OUTER" = private ]; then
			outer_stop
			unmount_under "$STATE_DIR"
			clean_run_lxc
		fi
	fi
	if [ "$ok" = 0 ]; then
		remove_state_dir "$STATE_DIR"
		log "removed the lab in $STATE_DIR ($(since "$t0"))"
	else
		log "error: the lab in $STATE_DIR was not fully removed; rerun: lab.sh down $STATE_FILE"
	fi
	if [ -f "$POINTER" ] && [ "$(cat "$POINTER")" = "$STATE_FILE" ] && [ "$ok" = 0 ]; then rm -f "$POINTER"; fi
	return "$ok"
}

# ---------------------------------------------------------------------------------------------
# Commands.

cmd_down() { # [STATE]
	if ! resolve_state "${1:-}"; then
		log "no lab to remove"
		return 0
	fi
	if [ ! -d "$STATE_DIR" ]; then
		if [ -f "$POINTER" ] && [ "$(cat "$POINTER")" = "$STATE_FILE" ]; then rm -f "$POINTER"; fi
		log "no lab in $STATE_DIR (already removed)"
		return 0
	fi
	case $(basename "$STATE_DIR") in ibk-lab.*) ;; *) die "$STATE_DIR is not a lab state directory" ;; esac
	local kept=0
	if [ -f "$POINTER" ] && [ "$(cat "$POINTER")" = "$STATE_FILE" ]; then
		kept=1
		lock_pointer
	fi
	lock_state
	[ -d "$STATE_DIR" ] || return 0 # removed while we waited for the lock
	state_load
	teardown
	if [ "$kept" = 1 ] && [ ! -e "$POINTER" ]; then rm -f "$POINTER_LOCK"; fi
}

cmd_up() {
	local versions kept=""
	read -r -a versions <<<"$(requested_versions)"
	cmd_gc
	lock_pointer
	[ -f "$POINTER" ] && kept=$(cat "$POINTER")
	if [ -n "$kept" ] && [ -f "$kept" ]; then
		resolve_state "$kept"
		lock_state
		state_load
		if outer_healthy; then
			# Labs added by an earlier run stay; this run's versions must be there too.
			local v
			for v in $(lab_versions); do
				case " ${versions[*]} " in *" $v "*) ;; *) versions+=("$v") ;; esac
			done
			CLEANUP_ON_EXIT=kept
		else
			log "the kept lab in $STATE_DIR is unhealthy; replacing it"
			teardown || die "cannot remove the unhealthy kept lab"
			unlock_state
			kept=""
		fi
	else
		kept=""
	fi
	if [ -z "$kept" ]; then
		new_state 1
		lock_state
		printf '%s\n' "$STATE_FILE" >"$POINTER.tmp"
		mv "$POINTER.tmp" "$POINTER"
		CLEANUP_ON_EXIT=all
	fi
	trap on_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	# stdout carries only the state file path.
	bring_up "${versions[@]}" >&2
	CLEANUP_ON_EXIT=""
	unlock_state
	log "kept lab ready; use it with: eval \"\$(${LAB_GROUP:+INCUS_BACKUP_LAB_GROUP=$LAB_GROUP }bash $(printf %q "$LAB_HOME/lab.sh") env)\"; remove it with: npm run lab:down"
	printf '%s\n' "$STATE_FILE"
}

cmd_hold() {
	local owner="" versions rc
	while [ $# -gt 0 ]; do
		case $1 in
		--owner)
			owner=${2:?--owner needs a PID}
			shift 2
			;;
		*) die "hold: unknown argument $1" ;;
		esac
	done
	read -r -a versions <<<"$(requested_versions)"
	cmd_gc
	new_state 0
	if [ -n "$owner" ]; then
		state_set IBK_OWNER_PID "$owner"
		state_set IBK_OWNER_START "$(proc_start "$owner")"
	fi
	# The owner reads our output. If it dies, a write to the pipe must not kill us before the
	# teardown. A handler rather than ignoring: children then keep the default SIGPIPE.
	trap 'exec >/dev/null 2>&1' PIPE
	# Whatever ends this process, the lab goes with it.
	CLEANUP_ON_EXIT=all
	trap on_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	lock_state
	bring_up "${versions[@]}" >&2
	unlock_state
	printf '%s\n' "$STATE_FILE"
	while :; do
		[ -f "$STATE_FILE" ] || break
		if [ -n "$owner" ] && ! pid_alive "$owner"; then break; fi
		if read -r -t 1 _; then continue; else rc=$?; fi
		[ "$rc" -gt 128 ] || break
	done
}

# all: remove the whole lab (hold, or a kept lab this run created); kept: an existing kept lab
# failed to gain a lab, which stays up as it was.
CLEANUP_ON_EXIT=""
on_exit() {
	local rc=$? p
	set +e
	trap - INT TERM HUP
	[ -n "$CLEANUP_ON_EXIT" ] || exit "$rc"
	# Nobody may read our output any more; a write to a dead pipe must not abort the teardown.
	if [ -n "${IBK_OWNER_PID:-}" ] && ! pid_alive "$IBK_OWNER_PID"; then exec >/dev/null 2>&1; fi
	# Lab creations still in flight would race the removal.
	for p in "${LAB_JOBS[@]}"; do wait "$p" 2>/dev/null; done
	if [ "$CLEANUP_ON_EXIT" = kept ]; then
		log "the kept lab in $STATE_DIR is still up; check it with: lab.sh status"
		exit "$rc"
	fi
	if [ -f "$STATE_FILE" ]; then
		lock_state
		state_load
		teardown || rc=1
	fi
	exit "$rc"
}

# Removes the throwaway labs whose holder and owner are gone, and lab temp dirs with no state.
# Only what provably belongs to nobody: a lab made in another PID namespace (another container
# sharing /tmp), or by a lab.sh that did not record its identity, is left alone, for `leftovers`
# to report.
cmd_gc() {
	local f d keep ns holder hstart owner ostart me
	me=$(pid_ns)
	for f in "$TMP_ROOT"/ibk-lab.*/state; do
		[ -f "$f" ] || continue
		keep=$(sed -n 's/^IBK_KEEP=//p' "$f")
		[ "$keep" = 1 ] && continue
		ns=$(sed -n 's/^IBK_PIDNS=//p' "$f")
		[ -n "$ns" ] && [ "$ns" = "$(printf '%q' "$me")" ] || continue
		holder=$(sed -n 's/^IBK_HOLDER_PID=//p' "$f")
		hstart=$(sed -n 's/^IBK_HOLDER_START=//p' "$f")
		owner=$(sed -n 's/^IBK_OWNER_PID=//p' "$f")
		ostart=$(sed -n 's/^IBK_OWNER_START=//p' "$f")
		[ -n "$hstart" ] || continue
		if ! proc_is "$holder" "$hstart" && ! proc_is "$owner" "$ostart"; then
			log "removing the abandoned lab $(dirname "$f")"
			(cmd_down "$f") || :
		fi
	done
	# A temp dir without a state file is debris: a lab removed while a test's incus client still
	# ran re-creates conf/. A lab being made writes its state at once, hence the age; anything
	# mounted there, or a process naming it, means it is in use.
	for d in "$TMP_ROOT"/ibk-lab.*; do
		[ -d "$d" ] && [ ! -e "$d/state" ] || continue
		[ -n "$(find "$d" -maxdepth 0 -mmin +10 2>/dev/null)" ] || continue
		dir_in_use "$d" && continue
		log "removing the stale lab directory $d (no state)"
		remove_state_dir "$d"
	done
}
dir_in_use() { # DIR: mounted on or under (its own lab_tmpfs aside), or named by a running process
	local p
	if awk -v p="$1" '
		{ sep = 0; for (i = 7; i <= NF; i++) if ($i == "-") { sep = i; break } }
		index($5, p "/") == 1 { found = 1 }
		$5 == p && !(sep && $(sep + 1) == "tmpfs" && $(sep + 2) == "ibk-lab") { found = 1 }
		END { exit !found }' /proc/self/mountinfo; then return 0; fi
	for p in /proc/[0-9]*; do
		read_cmdline "${p#/proc/}" || continue
		[[ $CMDLINE == *"$1"* ]] && return 0
	done
	return 1
}

cmd_leftovers() {
	local kepts=() keep_names="" found=0 d p line s conf ptr k
	# Every kept lab, of every checkout and test group.
	for ptr in "$TMP_ROOT"/incus-backup-lab-*.state; do
		[ -f "$ptr" ] || continue
		k=$(dirname "$(cat "$ptr")")
		kepts+=("$k")
		keep_names+=" $(sed -n 's/^IBK_LAB_[0-9_]*=//p' "$k/state" 2>/dev/null | tr '\n' ' ')"
	done
	report() {
		echo "$1"
		found=1
	}
	mine() { for k in "${kepts[@]}"; do [[ $1 == *"$k/"* || $1 == *"$k" ]] && return 0; done; return 1; }
	kept_name() { local n; for n in $keep_names; do [[ $1 == *"$n"* ]] && return 0; done; return 1; }
	for d in "$TMP_ROOT"/ibk-lab.*; do
		[ -e "$d" ] && ! mine "$d" && report "temp dir: $d"
	done
	for p in /proc/[0-9]*; do
		read_cmdline "${p#/proc/}" || continue
		case $CMDLINE in
		*"/ibk-lab."* | *"ibk-lab-"*) mine "$CMDLINE" || kept_name "$CMDLINE" || report "process ${p#/proc/}: $(printf '%.160s' "${CMDLINE//$'\n'/ }")" ;;
		esac
	done
	while read -r line; do mine "$line" || report "mount: $line"; done < <(awk '$5 ~ /\/ibk-lab\./ { print $5 }' /proc/self/mountinfo)
	# The btrfs files of the labs; mount -o loop detaches the device on unmount.
	for p in /sys/block/loop*/loop/backing_file; do
		[ -r "$p" ] || continue
		read -r line <"$p" 2>/dev/null || continue
		case $line in
		*"/ibk-lab."*) mine "$line" || report "loop device /dev/$(basename "$(dirname "$(dirname "$p")")"): $line" ;;
		esac
	done
	while read -r line; do mine "${line#/run/lxc/lock}" || report "lxc lock: $line"; done < <(
		find /run/lxc/lock -type d -name 'ibk-lab.*' -prune 2>/dev/null
	)
	while read -r line; do kept_name "$line" || report "cgroup: $line"; done < <(
		find /sys/fs/cgroup -maxdepth 2 -type d -name 'lxc.*.ibk-lab-*' 2>/dev/null
	)
	for s in $HOST_SOCKETS; do
		[ -S "$s" ] || continue
		conf=$(mktemp -d)
		while read -r line; do
			[ -n "$line" ] && ! kept_name "$line" && report "container on the Incus at $s: $line"
		done < <(INCUS_SOCKET=$s INCUS_CONF=$conf timeout 15 incus list '^ibk-lab-' -f csv -c n </dev/null 2>/dev/null || :)
		while read -r line; do
			[ -n "$line" ] && report "image alias on the Incus at $s: $line"
		done < <(INCUS_SOCKET=$s INCUS_CONF=$conf timeout 15 incus image alias list 'ibk-lab-image-' -f csv -c n </dev/null 2>/dev/null || :)
		rm -rf "$conf"
	done
	[ "$found" = 0 ] && log "nothing left behind${kepts[*]:+ (apart from the kept lab(s) in ${kepts[*]})}"
	return "$found"
}

# Optional STATE and VERSION arguments in either order.
parse_target() {
	local s="" a
	TARGET_VERSION=""
	for a in "$@"; do
		if is_version "$a"; then TARGET_VERSION=$a; else s=$a; fi
	done
	resolve_state "$s" || die "no lab: bring one up with 'lab.sh up', or pass its state file"
	[ -f "$STATE_FILE" ] || die "no lab state at $STATE_FILE"
	state_load
	[ -n "$TARGET_VERSION" ] || TARGET_VERSION=${IBK_PRIMARY:-$(lab_versions | awk '{ print $1 }')}
	[ -n "$(lab_var LAB "$TARGET_VERSION")" ] || die "no $TARGET_VERSION lab in $STATE_FILE"
}

cmd_status() {
	local v healthy=0 extra
	parse_target "$@"
	echo "state:  $STATE_FILE ($([ "${IBK_KEEP:-}" = 1 ] && echo kept || echo throwaway))"
	if outer_healthy; then
		echo "outer:  ${IBK_OUTER:-?} Incus at $IBK_OUTER_SOCKET: healthy"
	else
		echo "outer:  ${IBK_OUTER:-?} Incus at ${IBK_OUTER_SOCKET:-?}: NOT RESPONDING"
		healthy=1
	fi
	for v in $(lab_versions); do
		if lab_healthy "$v"; then extra=healthy; else
			extra="NOT HEALTHY"
			healthy=1
		fi
		echo "lab $v: container $(lab_var LAB "$v"), Incus $(lab_var VERSION "$v"), socket $(lab_var SOCKET "$v"): $extra"
	done
	for extra in ${!IBK_SERVER_@}; do echo "extra incusd ${extra#IBK_SERVER_}: ${!extra}"; done
	return "$healthy"
}

cmd_env() {
	local v
	parse_target "$@"
	printf 'export INCUS_BACKUP_LAB_STATE=%q\n' "$STATE_FILE"
	printf 'export INCUS_SOCKET=%q\n' "$(lab_var SOCKET "$TARGET_VERSION")"
	# An empty client config of our own: no remotes, default project.
	printf 'export INCUS_CONF=%q\n' "$STATE_DIR/conf"
	# The tool's local state (install id, restic runs and journal): the lab's, not /var/lib's.
	printf 'export INCUS_BACKUP_STATE_DIR=%q\n' "$STATE_DIR/tool-state"
	echo 'unset INCUS_DIR INCUS_REMOTE INCUS_PROJECT'
	for v in $(lab_versions); do
		printf 'export INCUS_BACKUP_LAB_SOCKET_%s=%q\n' "$(vkey "$v")" "$(lab_var SOCKET "$v")"
	done
}

json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}
cmd_json() {
	local v sep=""
	parse_target "$@"
	printf '{"stateFile":%s,"stateDir":%s,"keep":%s,"primary":%s,"incusConf":%s,' \
		"$(json_str "$STATE_FILE")" "$(json_str "$STATE_DIR")" \
		"$([ "${IBK_KEEP:-}" = 1 ] && echo true || echo false)" \
		"$(json_str "$TARGET_VERSION")" "$(json_str "$STATE_DIR/conf")"
	printf '"outer":{"mode":%s,"socket":%s},"labs":{' "$(json_str "${IBK_OUTER:-}")" "$(json_str "${IBK_OUTER_SOCKET:-}")"
	for v in $(lab_versions); do
		printf '%s%s:{"container":%s,"socket":%s,"serverVersion":%s}' "$sep" "$(json_str "$v")" \
			"$(json_str "$(lab_var LAB "$v")")" "$(json_str "$(lab_var SOCKET "$v")")" \
			"$(json_str "$(lab_var VERSION "$v")")"
		sep=,
	done
	printf '}}\n'
}

cmd_prepare() {
	local versions
	read -r -a versions <<<"$(requested_versions)"
	build_all "${versions[@]}"
	log "cache ready in $CACHE_DIR"
}

cmd_exec() {
	local args=() name
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		args+=("$1")
		shift
	done
	[ "${1:-}" = -- ] && shift
	[ $# -gt 0 ] || die "usage: lab.sh exec [VERSION] -- COMMAND..."
	parse_target "${args[@]}"
	name=$(lab_var LAB "$TARGET_VERSION")
	# No timeout wrapper: it would take the terminal away from an interactive command.
	INCUS_SOCKET=$IBK_OUTER_SOCKET INCUS_CONF=$STATE_DIR/conf exec incus exec "$name" -- "$@"
}

# The main incusd of the lab container NAME gets signal SIG; waits until lab-init.sh has started
# the next one and it answers. Sets OLD_PID and NEW_PID.
signal_incusd() { # NAME SIG
	local i=0
	OLD_PID=$(outer exec "$1" -- cat /run/lab-incusd.pid)
	# kill is only a shell builtin in a minbase rootfs (no procps).
	outer exec "$1" -- sh -c 'kill "-$1" "$2"' sh "$2" "$OLD_PID"
	while :; do
		NEW_PID=$(outer exec "$1" -- cat /run/lab-incusd.pid 2>/dev/null) || NEW_PID=""
		[ -n "$NEW_PID" ] && [ "$NEW_PID" != "$OLD_PID" ] && break
		[ "$i" -lt 600 ] || die "incusd in the $TARGET_VERSION lab did not come back"
		sleep 0.1
		i=$((i + 1))
	done
	INCUS_TIMEOUT=70 inner "$TARGET_VERSION" admin waitready --timeout 60
}

# A managed network the restarted daemon could not start: Incus marks it unavailable (instances
# with a NIC on it do not start) and tries again only a minute later.
network_unavailable() { # VERSION
	inner "$1" warning list --format csv -c tS 2>/dev/null | grep -Eq '^Network unavailable,(NEW|ACKNOWLEDGED)$'
}

cmd_restart_incusd() {
	local args=() sig=TERM name old tries=0
	for a in "$@"; do
		if [ "$a" = --kill ]; then sig=KILL; else args+=("$a"); fi
	done
	parse_target "${args[@]}"
	name=$(lab_var LAB "$TARGET_VERSION")
	# SIGTERM makes incusd exit and leave its instances running, as a service restart does.
	signal_incusd "$name" "$sig"
	old=$OLD_PID
	# The bridge's dnsmasq outlives the daemon (as on a host). The new daemon stops it and starts
	# its own, but under load the old one may still hold the address ("failed to create listening
	# socket ... Address already in use"), and the bridge is then unavailable for a minute: every
	# later test in this lab that starts an instance would fail. So that dnsmasq goes, and the
	# daemon is restarted once more.
	while network_unavailable "$TARGET_VERSION"; do
		[ "$tries" -lt 3 ] || die "the $TARGET_VERSION lab's incusd cannot start its managed network after a restart"
		tries=$((tries + 1))
		log "lab $TARGET_VERSION: the restarted incusd could not start $LAB_BRIDGE (the old dnsmasq held its address); restarting it once more"
		outer exec "$name" -- sh -c '
			me=$(readlink /proc/1/ns/net)
			for i in $(seq 1 50); do
				left=""
				for p in /proc/[0-9]*; do
					case "$(tr "\0" " " <"$p/cmdline" 2>/dev/null)" in
					"dnsmasq "*" --interface=$1 "*) [ "$(readlink "$p/ns/net")" = "$me" ] && left="$left ${p#/proc/}" ;;
					esac
				done
				[ -n "$left" ] || exit 0
				kill -9 $left 2>/dev/null
				sleep 0.1
			done
			exit 1' sh "$LAB_BRIDGE" || die "the $TARGET_VERSION lab's dnsmasq on $LAB_BRIDGE did not stop"
		signal_incusd "$name" TERM
	done
	log "lab $TARGET_VERSION: incusd restarted (SIG$sig, pid $old -> $NEW_PID)"
}

server_args() { # [STATE] [VERSION] [--bare|--real] NAME -> TARGET_VERSION, SERVER_NAME, SERVER_VAR, BARE, REAL
	local args=() a
	SERVER_NAME=""
	BARE=0
	REAL=0
	for a in "$@"; do
		if [ "$a" = --bare ]; then
			BARE=1
		elif [ "$a" = --real ]; then
			REAL=1
		elif [ -z "$SERVER_NAME" ] && ! is_version "$a" && [[ "$a" =~ ^[a-z][a-z0-9-]{0,15}$ ]] && [ ! -e "$a" ]; then
			SERVER_NAME=$a
		else
			args+=("$a")
		fi
	done
	[ -n "$SERVER_NAME" ] || die "missing server NAME (lowercase letters, digits, hyphens; at most 16)"
	parse_target "${args[@]}"
	SERVER_VAR=IBK_SERVER_$(vkey "$TARGET_VERSION")_${SERVER_NAME//-/_}
}
# The network namespace of an extra server, inside its lab container.
server_netns() { printf 'ibk-%s\n' "$SERVER_NAME"; }

cmd_server_add() {
	local name sock dir t0
	server_args "$@"
	t0=$(now)
	lock_state
	state_load
	name=$(lab_var LAB "$TARGET_VERSION")
	sock=$STATE_DIR/v$(vkey "$TARGET_VERSION")-$SERVER_NAME.sock
	dir=/var/lib/incus-$SERVER_NAME
	[ -z "${!SERVER_VAR:-}" ] || die "extra server $SERVER_NAME already runs in the $TARGET_VERSION lab"
	state_set "$SERVER_VAR" "$sock"
	# A daemon of its own beside the lab's main one, as on a second machine: in a network
	# namespace of its own (otherwise its bridges collide with the main daemon's: "Network
	# interface ... already exists"), in a mount namespace of its own (a slave: mounts of the lab
	# still reach it) with a sysfs of that network namespace. The lab's cgroup mounts (lab-init
	# makes them as the host has them) go back on top, so this incusd sees the controllers the
	# main one sees: mounting cgroup2 alone would hide the v1 controllers of a hybrid-cgroup host
	# (as here), and limits would be ignored. setsid, so it outlives this exec session; nsenter,
	# unshare and sh exec, so the pid is incusd's. Its socket is a path, which the proxy reaches
	# from any network namespace.
	outer exec "$name" -- sh -c '
		set -e
		mkdir -p "$1" /var/log/incus
		ip netns delete "$3" 2>/dev/null || :
		ip netns add "$3"
		ip -n "$3" link set lo up
		INCUS_DIR="$1" setsid nsenter "--net=/run/netns/$3" unshare --mount --propagation slave sh -c "
			set -e
			if mountpoint -q /sys/fs/cgroup; then
				cg=\$(mktemp -d)
				mount --rbind /sys/fs/cgroup \$cg
			fi
			mount -t sysfs sysfs /sys
			if [ -n \"\${cg:-}\" ]; then
				mount --move \$cg /sys/fs/cgroup
				rmdir \$cg
			fi
			exec /usr/libexec/incus/incusd --group root --logfile /var/log/incus/incusd-$2.log
		" </dev/null >"/var/log/incus/incusd-$2.out" 2>&1 &
		echo $! >"/run/lab-incusd-$2.pid"
	' sh "$dir" "$SERVER_NAME" "$(server_netns)"
	outer config device add "$name" "srv-$SERVER_NAME" proxy "listen=unix:$sock" "connect=unix:$dir/unix.socket" \
		bind=host "uid=$(id -u)" "gid=$(id -g)" mode=0660 >/dev/null
	if ! INCUS_TIMEOUT=70 incus_at "$sock" admin waitready --timeout 60; then
		outer exec "$name" -- sh -c 'tail -n 20 "/var/log/incus/incusd-$1.out" "/var/log/incus/incusd-$1.log"' sh "$SERVER_NAME" >&2 || :
		die "the extra incusd '$SERVER_NAME' in the $TARGET_VERSION lab did not come up"
	fi
	if [ "$BARE" = 0 ]; then
		incus_at "$sock" storage create default dir >/dev/null
		incus_at "$sock" profile device add default root disk pool=default path=/ >/dev/null
	fi
	if [ "$REAL" = 1 ]; then
		# Set up like the lab's main daemon: the same bridge (its own network namespace allows
		# the same name and subnet) on eth0 of the default profile, and a btrfs pool in a
		# subvolume of the lab's btrfs filesystem (Incus makes it; server-remove deletes it).
		quiet incus_at "$sock" storage create "$LAB_BTRFS_POOL" btrfs "source=$LAB_BTRFS_PATH/srv-$SERVER_NAME" ||
			die "cannot create the btrfs pool of the extra incusd '$SERVER_NAME'"
		quiet incus_at "$sock" network create "$LAB_BRIDGE" "${LAB_BRIDGE_CONFIG[@]}" ||
			die "cannot create the $LAB_BRIDGE network of the extra incusd '$SERVER_NAME'"
		incus_at "$sock" profile device add default eth0 nic "network=$LAB_BRIDGE" name=eth0 >/dev/null
	fi
	log "lab $TARGET_VERSION: extra incusd '$SERVER_NAME' up in $(since "$t0")"
	printf '%s\n' "$sock"
}

cmd_server_remove() {
	local name sock dir
	server_args "$@"
	lock_state
	state_load
	name=$(lab_var LAB "$TARGET_VERSION")
	sock=${!SERVER_VAR:-}
	dir=/var/lib/incus-$SERVER_NAME
	[ -z "$sock" ] || INCUS_TIMEOUT=60 incus_at "$sock" admin shutdown --timeout 30 >/dev/null 2>&1 || :
	outer exec "$name" -- sh -c '
		pid=$(cat "/run/lab-incusd-$2.pid" 2>/dev/null) || pid=
		if [ -n "$pid" ]; then
			i=0
			while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
			kill -KILL "$pid" 2>/dev/null || :
		fi
		awk -v p="$1/" "index(\$5, p) == 1 { print \$5 }" /proc/self/mountinfo | sort -r | while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m"
		done
		# What the daemon left running in its namespace (its bridges'"'"' dnsmasq outlive it, as on a
		# host) would keep the namespace, and the processes, alive in a kept lab until it is removed.
		ns=$(stat -L -c %i "/run/netns/$3" 2>/dev/null) || ns=
		if [ -n "$ns" ]; then
			for p in /proc/[0-9]*; do
				[ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$ns" ] && kill -KILL "${p#/proc/}" 2>/dev/null
			done
		fi
		ip netns delete "$3" 2>/dev/null || :
		# The subvolume of a --real server'"'"'s btrfs pool, with whatever the daemon left in it.
		if [ -d "$4" ]; then btrfs subvolume delete -R "$4" >/dev/null 2>&1 || rm -rf "$4"; fi
		rm -rf "$1" "/run/lab-incusd-$2.pid" "/run/lxc/lock$1" "/var/log/incus/incusd-$2.out"
	' sh "$dir" "$SERVER_NAME" "$(server_netns)" "$LAB_BTRFS_PATH/srv-$SERVER_NAME"
	outer config device remove "$name" "srv-$SERVER_NAME" >/dev/null 2>&1 || :
	[ -z "$sock" ] || rm -f "$sock"
	state_del "$SERVER_VAR"
	log "lab $TARGET_VERSION: extra incusd '$SERVER_NAME' removed"
}

# A two-member Incus cluster in a lab, as two hosts: two extra incusd (NAME-1, NAME-2), each in
# its network namespace, joined over a veth pair between the namespaces (10.199.0.1 and .2, only
# reachable there). Members node1 and node2, each with a local `default` dir pool, the root disk
# and a managed bridge on eth0 in the default profile. Prints both sockets, node1's first.
cmd_cluster_add() {
	local name s1 s2 ns1 ns2 token preseed t0 args=() a
	for a in "$@"; do
		if [[ "$a" =~ ^[a-z][a-z0-9-]{0,13}$ ]] && ! is_version "$a" && [ ! -e "$a" ]; then name=$a; else args+=("$a"); fi
	done
	[ -n "${name:-}" ] || die "missing cluster NAME (lowercase letters, digits, hyphens; at most 14)"
	t0=$(now)
	parse_target "${args[@]}"
	s1=$(bash "$LAB_HOME/lab.sh" server-add "$STATE_FILE" "$TARGET_VERSION" --bare "$name-1")
	s2=$(bash "$LAB_HOME/lab.sh" server-add "$STATE_FILE" "$TARGET_VERSION" --bare "$name-2")
	ns1=ibk-$name-1
	ns2=ibk-$name-2
	outer exec "$(lab_var LAB "$TARGET_VERSION")" -- sh -c '
		set -e
		ip link add c1 netns "$1" type veth peer name c2 netns "$2"
		ip -n "$1" addr add 10.199.0.1/24 dev c1
		ip -n "$1" link set c1 up
		ip -n "$2" addr add 10.199.0.2/24 dev c2
		ip -n "$2" link set c2 up
	' sh "$ns1" "$ns2"
	incus_at "$s1" config set core.https_address 10.199.0.1:8443 >/dev/null
	quiet incus_at "$s1" cluster enable node1 || die "cannot make the cluster on $name-1"
	quiet incus_at "$s1" storage create default dir || die "cannot create the default pool of the cluster $name"
	incus_at "$s1" profile device add default root disk pool=default path=/ >/dev/null
	token=$(incus_at "$s1" cluster add node2 --quiet)
	preseed="cluster:
  server_name: node2
  enabled: true
  server_address: 10.199.0.2:8443
  cluster_token: $token
  member_config:
  - entity: storage-pool
    name: default
    key: source
    value: \"\"
"
	# The join checks the token against node1's address, which only the namespaces reach.
	outer exec "$(lab_var LAB "$TARGET_VERSION")" -- sh -c 'printf "%s" "$3" | INCUS_DIR="$1" ip netns exec "$2" incus admin init --preseed' \
		sh "/var/lib/incus-$name-2" "$ns2" "$preseed" >/dev/null || die "node2 of the cluster $name could not join"
	# A managed bridge on every member, as `incus admin init` leaves on a host.
	quiet incus_at "$s1" network create "$LAB_BRIDGE" --target node1 &&
		quiet incus_at "$s1" network create "$LAB_BRIDGE" --target node2 &&
		quiet incus_at "$s1" network create "$LAB_BRIDGE" "${LAB_BRIDGE_CONFIG[@]}" ||
		die "cannot create the $LAB_BRIDGE network of the cluster $name"
	incus_at "$s1" profile device add default eth0 nic "network=$LAB_BRIDGE" name=eth0 >/dev/null
	log "lab $TARGET_VERSION: cluster '$name' (node1, node2) up in $(since "$t0")"
	printf '%s\n%s\n' "$s1" "$s2"
}

cmd_cluster_remove() {
	local name a args=()
	for a in "$@"; do
		if [[ "$a" =~ ^[a-z][a-z0-9-]{0,13}$ ]] && ! is_version "$a" && [ ! -e "$a" ]; then name=$a; else args+=("$a"); fi
	done
	[ -n "${name:-}" ] || die "missing cluster NAME"
	parse_target "${args[@]}"
	# Both daemons shut down while their link still stands: node1's shutdown, once node2's
	# namespace (and with it the veth pair) is gone, would wait 30 s for an answer that never comes.
	# Throwaway instances are killed first: a member's shutdown would give each its stop timeout.
	local n var
	var=IBK_SERVER_$(vkey "$TARGET_VERSION")_${name//-/_}_1
	[ -z "${!var:-}" ] || INCUS_TIMEOUT=60 incus_at "${!var}" stop --all --force >/dev/null 2>&1 || :
	for n in 2 1; do
		var=IBK_SERVER_$(vkey "$TARGET_VERSION")_${name//-/_}_$n
		[ -z "${!var:-}" ] || INCUS_TIMEOUT=60 incus_at "${!var}" admin shutdown --timeout 30 >/dev/null 2>&1 || :
	done
	bash "$LAB_HOME/lab.sh" server-remove "$STATE_FILE" "$TARGET_VERSION" "$name-2" || :
	bash "$LAB_HOME/lab.sh" server-remove "$STATE_FILE" "$TARGET_VERSION" "$name-1"
}

main() {
	local cmd=${1:-}
	[ $# -gt 0 ] && shift
	case $cmd in
	up) cmd_up "$@" ;;
	hold) cmd_hold "$@" ;;
	down) cmd_down "$@" ;;
	status) cmd_status "$@" ;;
	env) cmd_env "$@" ;;
	json) cmd_json "$@" ;;
	prepare) cmd_prepare "$@" ;;
	exec) cmd_exec "$@" ;;
	restart-incusd) cmd_restart_incusd "$@" ;;
	server-add) cmd_server_add "$@" ;;
	server-remove) cmd_server_remove "$@" ;;
	cluster-add) cmd_cluster_add "$@" ;;
	cluster-remove) cmd_cluster_remove "$@" ;;
	gc) cmd_gc ;;
	leftovers) cmd_leftovers ;;
	pointer) printf '%s\n' "$POINTER" ;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
