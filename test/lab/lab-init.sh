#!/bin/sh
# PID 1 of a lab container (under tini): keeps the inner incusd running until the lab stops.
# A minbase rootfs has no init system and LXC starts us with an empty environment.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

pid=
stop() {
	trap - PWR TERM INT
	# `incus stop` on the lab arrives as SIGPWR (forwarded by tini). Asking incusd to shut down
	# stops the inner instances cleanly; killing it is the fallback for a wedged daemon.
	if [ -n "$pid" ]; then
		incus admin shutdown --timeout 30 >/dev/null 2>&1 || kill "$pid" 2>/dev/null
		wait "$pid"
	fi
	exit 0
}
trap stop PWR TERM INT

mkdir -p /var/log/incus

# LXC leaves the cgroup mounts to the container's init when it runs in a cgroup namespace, as
# systemd would make them. Without them incusd finds no controllers, and instances with
# limits.memory or limits.processes fail to start ("Failed to setup cgroup limits"). Mount them
# as the host has them: cgroup2 alone on a cgroup2 host; a tmpfs with one mount per v1 hierarchy
# and cgroup2 on unified/ on a hybrid one.
mount_cgroups() {
	mountpoint -q /sys/fs/cgroup && return 0
	if ! awk -F: '$2 != "" { found = 1 } END { exit !found }' /proc/self/cgroup; then
		mount -t cgroup2 cgroup2 /sys/fs/cgroup
		return
	fi
	mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
	awk -F: '$2 != "" { print $2 }' /proc/self/cgroup | while read -r c; do
		case $c in
		name=*) d=${c#name=} o=none,$c ;;
		*) d=$c o=$c ;;
		esac
		mkdir -p "/sys/fs/cgroup/$d"
		mount -t cgroup -o "$o" cgroup "/sys/fs/cgroup/$d"
		# Co-mounted controllers (cpu,cpuacct) get a link per name, as systemd makes them.
		case $d in *,*)
			for n in $(echo "$d" | tr , ' '); do ln -sfn "$d" "/sys/fs/cgroup/$n"; done
			;;
		esac
	done
	mkdir -p /sys/fs/cgroup/unified
	mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
}
mount_cgroups >>/var/log/incus/lab-init.log 2>&1 || echo "lab-init: mounting the cgroups failed" >>/var/log/incus/lab-init.log

# Nothing else brings loopback up here; without it the lab's network namespace has no routing
# table and inner managed networks cannot be created.
ip link set lo up 2>/dev/null || :
while :; do
	/usr/libexec/incus/incusd --group root --logfile /var/log/incus/incusd.log </dev/null >>/var/log/incus/incusd.out 2>&1 &
	pid=$!
	# lab.sh's restart-incusd reads this to signal the main daemon, not a fork* helper or an extra server.
	echo "$pid" >/run/lab-incusd.pid
	wait "$pid" || :
	# incusd ended while the lab keeps running: a test restarted or killed it on purpose, so bring it back.
	sleep 0.2
done
