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
