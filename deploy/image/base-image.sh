#!/bin/sh
# Build the image's base from Debian's own packages (debootstrap) and import it into Docker, for
# machines that reach a Debian mirror but no image registry. Where a registry is reachable, skip this
# and build with --build-arg BASE_IMAGE=debian:bookworm-slim instead.
#
#   deploy/image/base-image.sh [TAG]       (root; default TAG echotune-base:bookworm)
#
# DEBIAN_MIRROR overrides the mirror; by default it is the one apt uses on this machine.
set -eu

tag=${1:-echotune-base:bookworm}
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag exists (docker rmi $tag to rebuild it)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "debootstrap needs root: run 'sudo $0 $tag'" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

# the first Debian mirror apt is configured with (deb822 "URIs:" or one-line "deb URL bookworm ...")
mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit} /^deb / && $2 ~ /\/debian\/?$/ {print $2; exit}')}
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /tmp/echotune-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $mirror into $root"
# what the Dockerfile's first stage would otherwise install: python3 is Debian's 3.11 (the project
# needs >= 3.11), python3-venv for the build stage's venv, ca-certificates for TLS to Redis,
# PostgreSQL and the Spotify Web API, libgomp1 for LightFM's OpenMP extension
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 bookworm "$root" "$mirror"
# what an image does not need: package caches and lists, documentation
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$tag"
docker image ls "$tag"
