#!/bin/sh
# Build the image with BuildKit on the host's network, passing this machine's pip index and CA bundle
# (pip inside the build then reaches the same index through the same proxy as pip outside it).
#
#   deploy/image/build.sh [IMAGE] [BASE_IMAGE]     (defaults echotune:latest, echotune-base:bookworm)
#
# DOCKER overrides the docker client. PIP_INDEX_URL and PIP_CERT (or pip's own configuration) choose
# the index and the CA bundle; without them the build uses pypi.org and the base's certificates.
set -eu

image=${1:-echotune:latest}
base=${2:-echotune-base:bookworm}
cd "$(dirname "$0")/../.."

# BuildKit: through the buildx plugin, or built into a client older than 23 (Debian's docker.io);
# newer clients without buildx refuse, so fall back to Debian's client when it is there.
docker=${DOCKER:-docker}
if "$docker" buildx version >/dev/null 2>&1; then
    build="$docker buildx build --load"
else
    major=$("$docker" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ "${major:-99}" -ge 23 ] && [ -x /usr/bin/docker ] && [ "$(command -v "$docker")" != /usr/bin/docker ]; then
        docker=/usr/bin/docker
        major=$("$docker" version --format '{{.Client.Version}}' | cut -d. -f1)
    fi
    if [ "${major:-99}" -ge 23 ]; then
        echo "$docker has no buildx plugin and is too new for built-in BuildKit: install docker-buildx-plugin" >&2
        exit 1
    fi
    build="env DOCKER_BUILDKIT=1 $docker build"
fi
"$docker" info >/dev/null 2>&1 || { echo "no Docker daemon answers: start one (e.g. 'dockerd > /tmp/dockerd.log 2>&1 &' as root)" >&2; exit 1; }

pip_config() { python3 -m pip config get "$1" 2>/dev/null || true; }
index=${PIP_INDEX_URL:-$(pip_config global.index-url)}
cert=${PIP_CERT:-$(pip_config global.cert)}
cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
set -- --network host --build-arg "BASE_IMAGE=$base" --tag "$image"
[ -z "$index" ] || set -- "$@" --build-arg "PIP_INDEX_URL=$index"
[ ! -s "$cert" ] || set -- "$@" --secret "id=pip_ca,src=$cert"

echo "building $image on $base (index: ${index:-pypi.org}, CA bundle: $cert)"
start=$(date +%s)
$build "$@" .
echo "built $image in $(( $(date +%s) - start )) s, $("$docker" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
