#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12 (root): Incus from
# bookworm-backports, the lab's tools, and the npm dependencies. Idempotent; fast when done before.
#
#   bash scripts/setup.sh              everything
#   bash scripts/setup.sh --packages   only the Debian packages
#   bash scripts/setup.sh --npm        only `npm ci`
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(mmdebstrap busybox-static zstd ca-certificates util-linux perl time iproute2 btrfs-progs restic rclone openssh-server openssh-client)
BACKPORTS=(incus incus-client)

want_packages=1
want_npm=1
case ${1:-} in
--packages) want_npm=0 ;;
--npm) want_packages=0 ;;
"") ;;
*)
	echo "usage: scripts/setup.sh [--packages|--npm]" >&2
	exit 2
	;;
esac

check_node() { # before apt: a machine without a suitable Node.js should fail in seconds
	local v
	v=$(node --version 2>/dev/null) || {
		echo "setup: Node.js 20 or newer is needed (Debian 12's own nodejs is 18): install it first" >&2
		return 1
	}
	case $v in
	v1[0-9].* | v[0-9].*)
		echo "setup: Node.js $v is too old; 20 or newer is needed" >&2
		return 1
		;;
	esac
	echo "setup: node $v, npm $(npm --version)"
}

# Incus is in bookworm-backports. The suite is added by copying the machine's own first apt source
# (the second stanza is the security archive, which has no backports), so no mirror host is
# written down anywhere.
add_backports() {
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		awk -v RS= 'NR == 1' /etc/apt/sources.list.d/debian.sources |
			sed 's/^Suites: .*/Suites: bookworm-backports/' >/etc/apt/sources.list.d/backports.sources.new
		mv /etc/apt/sources.list.d/backports.sources.new /etc/apt/sources.list.d/backports.sources
	elif [ -f /etc/apt/sources.list ]; then
		awk '$1 == "deb" && $3 == "bookworm" { $3 = "bookworm-backports"; print; exit }' /etc/apt/sources.list \
			>/etc/apt/sources.list.d/backports.list
		[ -s /etc/apt/sources.list.d/backports.list ] || {
			echo "setup: no bookworm source in /etc/apt/sources.list to derive bookworm-backports from" >&2
			return 1
		}
	else
		echo "setup: no apt sources found" >&2
		return 1
	fi
}

missing_packages() {
	local p
	for p in "${BACKPORTS[@]}" "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
	done
}

install_packages() {
	if [ -z "$(missing_packages)" ]; then
		echo "setup: Debian packages already installed"
		return 0
	fi
	[ "$(id -u)" = 0 ] || {
		echo "setup: installing packages needs root" >&2
		return 1
	}
	add_backports
	apt-get update -q
	# Without --no-install-recommends, incus pulls QEMU and a desktop stack.
	apt-get install -y -q --no-install-recommends -t bookworm-backports "${BACKPORTS[@]}"
	# openssh-server is for the tests' own sshd on 127.0.0.1: installing it must not start one on
	# the machine, so services stay down while apt runs (policy-rc.d, Debian's switch for that).
	local policy=/usr/sbin/policy-rc.d made=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		made=1
	fi
	local rc=0
	apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" || rc=$?
	[ "$made" = 0 ] || rm -f "$policy"
	return "$rc"
}

install_npm() {
	# npm ci wipes node_modules; skip it when the installed tree is newer than the lock file.
	if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
		echo "setup: node_modules is up to date with package-lock.json"
		return 0
	fi
	npm ci --no-audit --no-fund
}

check_node </dev/null
if [ "$want_packages" = 1 ]; then install_packages </dev/null; fi
if [ "$want_npm" = 1 ]; then install_npm </dev/null; fi
echo "setup: done (incus $(incus --version 2>/dev/null || echo missing))"
