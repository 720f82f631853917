#!/usr/bin/env bash
# Make this machine able to build and run the project's images with podman (issue 28), when it has no
# Docker engine. Idempotent; run by `make images` and the container test tier (.ci/run).
#  - installs podman, runc and mmdebstrap from the distribution (Debian/Ubuntu apt) when podman is missing;
#  - adds one drop-in, /etc/containers/containers.conf.d/50-fer.conf (its own file; nothing else is
#    edited): runc, because crun refuses hybrid cgroups; cgroupfs, for machines without a systemd
#    session; no default ulimits, which some sandboxes cannot set;
#  - checks that a container runs.
set -euo pipefail
sudo_cmd=""
[ "$(id -u)" = 0 ] || sudo_cmd="sudo"

if ! command -v podman >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "podman is missing and this is not an apt system: install podman (and runc) with your package manager" >&2
    exit 1
  fi
  echo "installing podman, runc, mmdebstrap (apt)"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq podman runc mmdebstrap uidmap >/dev/null
fi

dropin=/etc/containers/containers.conf.d/50-fer.conf
if [ ! -f "$dropin" ]; then
  $sudo_cmd mkdir -p "$(dirname "$dropin")"
  $sudo_cmd tee "$dropin" >/dev/null <<'CONF'
# written by fer-mlops docker/scripts/podman-setup.sh; delete it to return to podman's defaults
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
fi

podman info --format 'podman {{.Version.Version}}: runtime {{.Host.OCIRuntime.Name}}, cgroups {{.Host.CgroupManager}}, storage {{.Store.GraphDriverName}}'
