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
#
# The mirror is not trusted: debootstrap checks the suite's Release file against Debian's
# archive keys (the host's debian-archive-keyring; bookworm's knows trixie's keys) and stops
# without a valid signature (--force-check-gpg); every package is then checked against the
# Release file's hashes. apt in the image checks the same way in every later build step.
set -euo pipefail
tag=${1:-flowerdock/debian:trixie-python3}
suite=${DEBIAN_SUITE:-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: building the base image needs root (debootstrap); run with sudo" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null || [ ! -e "$keyring" ]; then
  apt-get update -qq && apt-get install -y -qq debootstrap debian-archive-keyring >/dev/null
fi

rootfs=$(mktemp -d /tmp/flowerdock-rootfs.XXXXXX)
log=$rootfs.log
trap 'rm -rf "$rootfs" "$log"' EXIT
echo "debootstrap $suite from $mirror into $rootfs"
# The image keeps Debian's keyring: apt checks every later step's packages with it.
if ! debootstrap --variant=minbase --keyring="$keyring" --force-check-gpg \
     --include=python3,python3-venv,ca-certificates,debian-archive-keyring \
     "$suite" "$rootfs" "$mirror" > "$log" 2>&1; then
  cat "$log" >&2
  echo "error: debootstrap failed (above)" >&2
  exit 1
fi
signature=$(grep -m1 '^I: Valid Release signature' "$log" || true)
if [ -z "$signature" ]; then
  cat "$log" >&2
  echo "error: debootstrap reported no valid Release signature: refusing $suite from $mirror" >&2
  exit 1
fi
echo "Release file of $suite verified against $keyring: ${signature#I: }"
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
  --message "Debian $suite minbase with python3, from $mirror; Release file checked against $keyring: ${signature#I: }" \
  - "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
