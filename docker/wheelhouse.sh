#!/usr/bin/env bash
# Fills build/wheelhouse with every wheel the images install, fetched on the host.
#
# Why on the host: pip inside `docker build` cannot reach a package index from an
# air-gapped site, nor through a TLS-intercepting proxy whose CA only the host
# trusts. The host's pip already works (its trust store, its proxy settings), and
# a wheelhouse can be carried to a site that has no index at all.
# Versions come from constraints.txt, so the images match the tested host install.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/wheelhouse
python=${PYTHON:-python3}
# The images run Debian bookworm's CPython 3.11 on x86_64: fetch wheels with a
# Python of that kind so that pip picks the matching binary wheels.
$python -c 'import sys, platform; assert sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64", "the wheelhouse needs CPython 3.11 on x86_64 (set PYTHON=...)"'
mkdir -p "$out"
cp constraints.txt "$out/constraints.txt"
rm -f "$out"/flowerdock-*.whl
$python -m pip wheel --quiet --no-deps --wheel-dir "$out" .
# The app's dependencies, and Flower's simulation extra for the simulation image.
$python -m pip download --quiet --dest "$out" --constraint constraints.txt \
  "$(ls "$out"/flowerdock-*.whl)" "flwr[simulation]"
du -sh "$out" | awk '{print "wheelhouse: " $1 " in '"$out"'"}'
