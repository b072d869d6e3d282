#!/usr/bin/env bash
# The main job on a machine that is not an Incus host of its own: the test lab plays the host.
# It brings up the (kept) lab, builds the incus-backup image into the lab's Incus, creates a demo
# instance with a volume, deploys the `backup` container with deploy/install.sh inside the lab,
# and runs `incus exec backup -- incus-backup backup --all`, then `list` and `status`.
# The lab stays up afterwards to look around; `npm run lab:down` removes all of it.
#
# On a real Incus host the same job is:
#   image/build.sh && deploy/install.sh --dir /mnt/nas/sysbackup/incus
#   incus exec backup -- incus-backup backup --all
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LAB=test/lab/lab.sh
NAS=/srv/nas/incus-backup
DEPLOY=/root/incus-backup-deploy

step() { printf '\n=== %s\n' "$*" >&2; }

step "lab: bring up (or reuse) the kept Incus-in-Incus lab"
INCUS_BACKUP_LABS=${INCUS_BACKUP_LAB_VERSION:-6.0} bash "$LAB" up >/dev/null
eval "$(bash "$LAB" env)"

step "image: build incus-backup offline and import it into the lab's Incus"
bash image/build.sh >/dev/null

step "demo data: instance demo-web with a volume demo-data"
if ! incus info demo-web >/dev/null 2>&1; then
	incus launch busybox demo-web >/dev/null
	incus storage volume create default demo-data >/dev/null
	incus storage volume attach default demo-data demo-web /srv/data
	incus exec demo-web -- sh -c 'echo "hello from demo-web" > /root/hello.txt; dd if=/dev/urandom of=/srv/data/blob bs=1M count=20 2>/dev/null'
fi
incus list demo-web -c ns

step "deploy: deploy/install.sh --dir $NAS, run on the lab (the \"host\")"
bash "$LAB" exec -- mkdir -p "$DEPLOY" "$NAS"
for f in install.sh uninstall.sh; do
	bash "$LAB" exec -- sh -c "cat > $DEPLOY/$f" <"deploy/$f"
done
bash "$LAB" exec -- bash "$DEPLOY/install.sh" --dir "$NAS"

step "incus exec backup -- incus-backup backup --all"
incus exec backup -- incus-backup backup --all

step "incus exec backup -- incus-backup list"
incus exec backup -- incus-backup list

step "incus exec backup -- incus-backup status"
incus exec backup -- incus-backup status

cat >&2 <<EOF2

Done. The lab is still up. To look around:
  eval "\$(bash $LAB env)"
  incus exec backup -- incus-backup restore --instance --name demo-web --dry-run
  bash $LAB exec -- ls -lR $NAS | head
Remove everything with: npm run lab:down
EOF2
