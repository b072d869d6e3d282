#!/bin/sh
# PID 1 of the busybox test image: idles, and exits at once on the signal `incus stop` sends (SIGPWR),
# which a shell ignores by default, so a stop would otherwise hang until its timeout.
trap 'exit 0' PWR TERM INT
while :; do
	sleep 1 &
	wait $!
done
