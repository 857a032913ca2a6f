#!/usr/bin/env bash
# Builds the SuperLink, SuperNode and ServerApp images, with or without a
# container registry:
#   1. Compose v2 and buildx (installed from Debian's packages if missing);
#   2. the wheelhouse, fetched on the host (docker/wheelhouse.sh; TORCH=cuda adds PyPI's torch);
#   3. the base image: $BASE_IMAGE if it is here or can be pulled, else one made
#      from Debian packages (docker/base/build.sh);
#   4. docker compose build.
# Prints what it chose and how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '%s [build-images] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
started=$SECONDS

step "Docker Compose v2 and buildx"
docker/install-compose.sh

torch=${TORCH:-$(sed -n 's/^TORCH=//p' .env)}
step "wheels (build/wheelhouse, build/app-wheel), torch: $torch"
TORCH=$torch docker/wheelhouse.sh

step "base image"
base=${BASE_IMAGE:-$(sed -n 's/^BASE_IMAGE=//p' .env)}
local_base=flowerdock/debian:trixie-python3
if docker image inspect "$base" >/dev/null 2>&1 || docker pull -q "$base" >/dev/null 2>&1; then
  echo "using $base"
else
  echo "$base cannot be pulled (no registry?): using $local_base, built from Debian packages"
  if [ "$(id -u)" -eq 0 ]; then docker/base/build.sh "$local_base"; else sudo docker/base/build.sh "$local_base"; fi
  base=$local_base
fi

step "images (docker compose build)"
export BASE_IMAGE=$base TORCH=$torch
docker compose --progress=quiet build
docker compose --progress=quiet -f docker/compose.server.yaml build gateway
docker compose --progress=quiet -f docker/compose.simulation.yaml build superlink
docker compose --progress=quiet -f docker/compose.aggregator.yaml build aggregator
docker image ls 'flowerdock/*' --format '{{.Repository}}:{{.Tag}}\t{{.Size}}'
step "done in $((SECONDS - started)) s"
