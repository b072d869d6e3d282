#!/bin/sh
# PID 1 of the incus-backup container: one DHCP lease for notifications, then the daemon under tini.
# LXC starts init with only the environment.* keys set: PATH comes from here.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Nothing else brings the loopback up in a container without an init system.
busybox ip link set lo up 2>/dev/null

# A NIC (the default profile's) needs an address for notifications to leave the host. udhcpc asks
# once and quits (-q), so no DHCP client stays behind listening; in the background, so a stop
# right after the start is not held up (PID 1 ignores signals it has no handler for).
for nic in /sys/class/net/*; do
	nic=${nic##*/}
	[ "$nic" = lo ] && continue
	busybox udhcpc -q -n -t 4 -T 2 -i "$nic" -s /usr/local/lib/incus-backup/udhcpc.script >/dev/null 2>&1 &
done

# tini reaps what `incus exec` sessions leave behind and forwards SIGPWR (what `incus stop`
# sends) and SIGTERM to the daemon, which stops at once when idle and abandons a backup cleanly.
exec /usr/bin/tini -- /usr/local/bin/incus-backup daemon
