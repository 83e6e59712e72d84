#!/usr/bin/env bash
# Builds a plain Debian base image from Debian's packages, for machines that cannot pull
# python:3.11-slim from a container registry:
#
#   scripts/debian_base.sh [TAG]        # default TAG: bert-compress-base:bookworm
#
# debootstrap (--variant=minbase) makes a bookworm root file system, `docker import` turns it into an
# image. Needs root, debootstrap and a running Docker engine. DEBIAN_MIRROR overrides the mirror.
# Build on it with `docker build --network host --build-arg BASE=TAG .`; the Dockerfile installs
# Debian's python3 and python3-venv into it.
set -euo pipefail

tag="${1:-bert-compress-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

die() { echo "debian_base.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (Debian/Ubuntu: apt-get install debootstrap)"
command -v docker >/dev/null || die "docker is not installed"

root="$(mktemp -d /var/tmp/debian-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
rm -f "$root.log"
# The downloaded packages and package lists: 80 MB the image does not need (the Dockerfile runs
# apt-get update itself).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "$tag"
