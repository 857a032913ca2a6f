#!/usr/bin/env bash
# Builds the base image from Debian packages alone, for hosts with no container
# registry (air-gapped sites, and this project's CI): debootstrap a minimal
# Debian trixie with its Python 3.13, then `docker import` it. It is what
# debian:trixie-slim (the Dockerfile's default base) is, plus python3.
#
#   docker/base/build.sh [TAG]        (default: flowerdock/debian:trixie-python3)
#
# Needs root (debootstrap) and an apt mirror (DEBIAN_MIRROR). With a registry,
# skip this: the Dockerfile's default base is debian:trixie-slim.
set -euo pipefail
tag=${1:-flowerdock/debian:trixie-python3}
suite=${DEBIAN_SUITE:-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: building the base image needs root (debootstrap); run with sudo" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

rootfs=$(mktemp -d /tmp/flowerdock-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $suite from $mirror into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >/dev/null
# What a container never needs: package lists and caches, docs, man pages, locales;
# nor do packages installed later (dpkg leaves them out, as in Debian's slim images).
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/flowerdock-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*

tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "Debian $suite minbase with python3, from $mirror" - "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
