#!/usr/bin/env bash
# Makes sure `docker compose` (v2) and `docker buildx` work, installing both as
# Docker CLI plugins for this user from Debian's packages when they are missing.
# Debian bookworm ships only Compose v1 (docker-compose 1.29); trixie has v2 and
# buildx. `apt-get download` + `dpkg -x` changes nothing system-wide.
set -euo pipefail
if docker compose version >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
  exit 0
fi
suite=${DEBIAN_PLUGIN_SUITE:-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "installing Docker Compose v2 and buildx from Debian $suite into ~/.docker/cli-plugins"
echo "deb $mirror $suite main" > "$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoDropPrivs=1
          -o APT::Sandbox::User=root)
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
apt-get "${apt_opts[@]}" update -qq
(cd "$work" && apt-get "${apt_opts[@]}" download -qq docker-compose docker-buildx)
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done
mkdir -p ~/.docker/cli-plugins
cp "$work"/root/usr/libexec/docker/cli-plugins/docker-* ~/.docker/cli-plugins/
docker compose version && docker buildx version
