#!/usr/bin/env bash
# Builds the incus-backup Incus image offline (Debian trixie, Node.js, the bundle) and imports it.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: image/build.sh [--mirror URL] [--alias NAME] [--bundle FILE] [--no-import] [--base-only]

Builds the `incus-backup` container image from Debian trixie with mmdebstrap and imports it, under
the alias, into the Incus that the `incus` CLI points at ($INCUS_SOCKET, $INCUS_DIR or the default
remote). Re-running replaces the image under the alias; with nothing changed it does nothing.
Prints the image fingerprint on stdout.

  --mirror URL   Debian mirror (default: $INCUS_BACKUP_MIRROR, else the first URIs: line of
                 /etc/apt/sources.list.d/debian.sources, else the first deb line of sources.list)
  --alias NAME   image alias (default: incus-backup)
  --bundle FILE  the bundled tool (default: dist/incus-backup.mjs, rebuilt first with npm run build)
  --no-import    build only; print the directory holding meta.tar.gz and rootfs.tar.zst
  --base-only    only build (or find in the cache) the Debian base; needs no bundle (CI warms the
                 cache with it while npm installs)

Environment:
  INCUS_BACKUP_CACHE   cache root (default: <repo>/.cache); the image cache is its image/ subdir.
                       The Debian base is cached by a hash of its recipe, so a rebuild where only
                       the bundle changed takes seconds.
  INCUS_BACKUP_MIRROR  as --mirror
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${INCUS_BACKUP_CACHE:-$REPO/.cache}/image
ALIAS=incus-backup
BUNDLE=
MIRROR=${INCUS_BACKUP_MIRROR:-}
IMPORT=1
BASE_ONLY=0

log() { printf 'build: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

while [ $# -gt 0 ]; do
	case $1 in
	--mirror) MIRROR=${2:?--mirror needs a URL}; shift 2 ;;
	--mirror=*) MIRROR=${1#*=}; shift ;;
	--alias) ALIAS=${2:?--alias needs a name}; shift 2 ;;
	--alias=*) ALIAS=${1#*=}; shift ;;
	--bundle) BUNDLE=${2:?--bundle needs a file}; shift 2 ;;
	--bundle=*) BUNDLE=${1#*=}; shift ;;
	--no-import) IMPORT=0; shift ;;
	--base-only) BASE_ONLY=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done

mirror() {
	local m=$MIRROR
	if [ -z "$m" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
		m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
		m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
	fi
	[ -n "$m" ] || die "no Debian mirror in the apt configuration; pass --mirror URL or set INCUS_BACKUP_MIRROR"
	printf '%s\n' "${m%/}"
}

# ---------------------------------------------------------------------------------------------
# The Debian base: everything but the tool. Cached by a hash of this recipe (the mirror is left
# out: another mirror serves the same packages), built at most once at a time.

# shellcheck disable=SC2054,SC2016 # the commas belong to --include; $1 is the hook's
BASE_ARGS=(
	--variant=minbase
	'--aptopt=APT::Install-Recommends "false"'
	'--dpkgopt=path-exclude=/usr/share/man/*'
	'--dpkgopt=path-exclude=/usr/share/doc/*'
	'--dpkgopt=path-exclude=/usr/share/locale/*'
	# Node.js 20 (bookworm's 18 is too old for undici 7); tini as PID 1; the decompressors that
	# `verify --deep` runs; tzdata for schedules and retention in local time; busybox for udhcpc.
	--include=nodejs,ca-certificates,tini,zstd,xz-utils,bzip2,lz4,tzdata,busybox,restic,openssh-client
	# The build machine's names must not end up in the image.
	'--customize-hook=rm -f "$1/etc/hostname" "$1/etc/resolv.conf"; : >"$1/etc/resolv.conf"'
)
SUITE=trixie

base_key() {
	{
		echo "incus-backup image base 1, arch $(uname -m), suite $SUITE"
		printf 'arg %s\n' "${BASE_ARGS[@]}"
	} | sha256sum | cut -c1-16
}

build_base() ( # ENTRY; in a subshell: its lock and traps stay local
	entry=$1
	[ -f "$entry/rootfs.tar" ] && exit 0
	mkdir -p "$CACHE"
	exec 8>>"$CACHE/.base.lock"
	flock 8
	[ -f "$entry/rootfs.tar" ] && exit 0
	command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap"
	rm -rf "$CACHE"/.build-base.*
	stage=$(mktemp -d "$CACHE/.build-base.XXXXXX")
	trap 'rm -rf "$stage"' EXIT
	m=$(mirror)
	q_stage=$(printf %q "$stage")
	log "building the Debian $SUITE base from $m (about a minute; cached afterwards)"
	t0=$(now)
	if ! mmdebstrap "${BASE_ARGS[@]}" \
		--customize-hook="dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f='\${Version}' nodejs >$q_stage/nodejs.version" \
		"$SUITE" "$stage/rootfs.tar" "deb $m $SUITE main" >"$stage/build.log" 2>&1; then
		tail -n 30 "$stage/build.log" >&2
		die "mmdebstrap failed"
	fi
	rm -f "$stage/build.log"
	mv "$stage" "$entry"
	trap - EXIT
	for old in "$CACHE"/base-*; do
		[ "$old" = "$entry" ] || rm -rf "$old"
	done
	log "built the base in $(since "$t0") (Node.js $(cat "$entry/nodejs.version"))"
)

# ---------------------------------------------------------------------------------------------
# The image: the base plus a small layer (the bundle, the command wrapper, init, /run/incus),
# appended to a copy of the base tar. Cached by the hash of base and layer, so a rebuild of the
# same inputs gives the same files and fingerprint, and the import is skipped.

tool_version() { sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$REPO/package.json" | head -n 1; }

layer_key() { # BASEKEY BUNDLE
	{
		echo "incus-backup image layer 1, base $1"
		sha256sum <"$2"
		for f in init.sh incus-backup.sh udhcpc.script; do
			echo "$f"
			cat "$HERE/$f"
		done
		tool_version
	} | sha256sum | cut -c1-16
}

build_image() ( # BASE ENTRY BUNDLE
	base=$1 entry=$2 bundle=$3
	[ -f "$entry/rootfs.tar.zst" ] && exit 0
	exec 8>>"$CACHE/.image.lock"
	flock 8
	[ -f "$entry/rootfs.tar.zst" ] && exit 0
	rm -rf "$CACHE"/.build-image.*
	stage=$(mktemp -d "$CACHE/.build-image.XXXXXX")
	trap 'rm -rf "$stage"' EXIT
	t0=$(now)
	epoch=$(date +%s)
	version=$(tool_version)
	node=$(cat "$base/nodejs.version")
	layer=$stage/layer
	install -D -m 0755 "$HERE/init.sh" "$layer/usr/sbin/init"
	install -D -m 0755 "$HERE/incus-backup.sh" "$layer/usr/local/bin/incus-backup"
	install -D -m 0644 "$bundle" "$layer/usr/local/lib/incus-backup/incus-backup.mjs"
	install -D -m 0755 "$HERE/udhcpc.script" "$layer/usr/local/lib/incus-backup/udhcpc.script"
	# The socket proxy listens here; a missing directory fails the container's start with
	# "bind: no such file or directory". Nothing mounts a tmpfs on /run, so it stays.
	install -d -m 0755 "$layer/run/incus"
	cp --reflink=auto "$base/rootfs.tar" "$stage/rootfs.tar"
	# /sbin is a symlink to usr/sbin in trixie: the init goes to its real place. Directories the
	# base already has (usr/local/bin, usr/sbin, run) are not added again.
	tar -rf "$stage/rootfs.tar" -C "$layer" --owner=0 --group=0 --numeric-owner --mtime="@$epoch" --no-recursion \
		./usr/sbin/init ./usr/local/bin/incus-backup ./usr/local/lib/incus-backup \
		./usr/local/lib/incus-backup/incus-backup.mjs ./usr/local/lib/incus-backup/udhcpc.script ./run/incus
	zstd -q -T0 -3 --rm "$stage/rootfs.tar" -o "$stage/rootfs.tar.zst"
	cat >"$stage/metadata.yaml" <<-EOF
		architecture: $(uname -m)
		creation_date: $epoch
		properties:
		  os: Debian
		  release: $SUITE
		  variant: incus-backup
		  version: "$version"
		  serial: "$(date -u -d "@$epoch" +%Y%m%d_%H%M)"
		  description: incus-backup $version (Debian $SUITE, Node.js $node)
	EOF
	tar -C "$stage" --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf - metadata.yaml | gzip -n >"$stage/meta.tar.gz"
	rm -rf "$layer" "$stage/metadata.yaml"
	(cd "$stage" && cat meta.tar.gz rootfs.tar.zst | sha256sum | cut -d' ' -f1 >fingerprint)
	mv "$stage" "$entry"
	trap - EXIT
	# Keep the three newest images: switching back and forth between branches stays fast.
	# shellcheck disable=SC2012 # our own names, no odd characters
	ls -1dt "$CACHE"/image-* 2>/dev/null | tail -n +4 | while read -r old; do rm -rf "$old"; done
	log "built the image in $(since "$t0")"
)

# ---------------------------------------------------------------------------------------------
# Import under the alias, replacing what it pointed at; nothing to do when it already points at
# this fingerprint.

alias_target() {
	incus query "/1.0/images/aliases/$ALIAS" 2>/dev/null | sed -n 's/^[[:space:]]*"target":[[:space:]]*"\([0-9a-f]*\)".*/\1/p'
}

import_image() { # ENTRY
	local entry=$1 fp current t0
	fp=$(cat "$entry/fingerprint")
	current=$(alias_target) || current=""
	if [ "$current" = "$fp" ]; then
		log "image $ALIAS is up to date (${fp:0:12})"
		return 0
	fi
	t0=$(now)
	if ! incus image info "$fp" >/dev/null 2>&1; then
		incus image import "$entry/meta.tar.gz" "$entry/rootfs.tar.zst" </dev/null >/dev/null ||
			die "cannot import the image into Incus"
	fi
	if [ -n "$current" ]; then
		# One PUT moves the alias: there is no moment without an image under it.
		incus query -X PUT --data "{\"target\": \"$fp\", \"description\": \"incus-backup\"}" \
			"/1.0/images/aliases/$ALIAS" >/dev/null || die "cannot move the alias $ALIAS"
		# The old image goes unless someone gave it another alias. Containers made from it keep
		# their own copy (or clone) of its rootfs.
		if ! incus query "/1.0/images/$current" 2>/dev/null | grep -q '"name":'; then
			incus image delete "$current" >/dev/null 2>&1 || log "warning: could not delete the old image ${current:0:12}"
		fi
		log "image $ALIAS: ${current:0:12} replaced by ${fp:0:12} in $(since "$t0")"
	else
		incus image alias create "$ALIAS" "$fp" --description incus-backup >/dev/null || die "cannot create the alias $ALIAS"
		log "image $ALIAS: imported ${fp:0:12} in $(since "$t0")"
	fi
}

main() {
	local t0 key base bundle lkey entry
	t0=$(now)
	if [ "$BASE_ONLY" = 1 ]; then
		key=$(base_key)
		build_base "$CACHE/base-$key"
		log "base ready in $(since "$t0")"
		return 0
	fi
	if [ -z "$BUNDLE" ]; then
		command -v npm >/dev/null || die "npm not found: build the bundle elsewhere and pass --bundle FILE"
		(cd "$REPO" && npm run --silent build >/dev/null) || die "npm run build failed"
		BUNDLE=$REPO/dist/incus-backup.mjs
	fi
	[ -f "$BUNDLE" ] || die "no bundle at $BUNDLE"
	bundle=$(realpath "$BUNDLE")
	key=$(base_key)
	base=$CACHE/base-$key
	build_base "$base"
	lkey=$(layer_key "$key" "$bundle")
	entry=$CACHE/image-$key-$lkey
	build_image "$base" "$entry" "$bundle"
	touch "$entry" # newest use first, for the cache's clean-up
	if [ "$IMPORT" = 0 ]; then
		printf '%s\n' "$entry"
		return 0
	fi
	command -v incus >/dev/null || die "the incus CLI is not installed"
	import_image "$entry"
	log "done in $(since "$t0")"
	cat "$entry/fingerprint"
}

main
