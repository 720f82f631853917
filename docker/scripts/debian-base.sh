#!/usr/bin/env bash
# A local Debian 12 base image (Python 3.11, python3-venv, CA certificates) for machines that cannot
# pull python:3.11-slim from Docker Hub: built with mmdebstrap from the distribution's own mirror and
# imported into podman. Usage: docker/scripts/debian-base.sh [IMAGE] (default localhost/fer-debian:bookworm).
# Does nothing when IMAGE exists.
set -euo pipefail
image="${1:-localhost/fer-debian:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if podman image exists "$image"; then
  echo "$image exists"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$work/rootfs.tar" "$mirror"
podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  --message "Debian 12 minbase + python3, python3-venv, ca-certificates (docker/scripts/debian-base.sh)" \
  "$work/rootfs.tar" "$image" >/dev/null
echo "$image built in $(( $(date +%s) - start )) s"
