#!/usr/bin/env bash
# Fetches, on the host, every wheel the images install:
#   build/wheelhouse/  the dependencies (changes only when constraints.txt does)
#   build/app-wheel/   this project's own wheel (the logging hook; changes with the code)
# Kept apart so that a code change does not invalidate the image layers that
# install torch and Flower (a bind mount's content is part of a layer's cache key).
#
# Why on the host: pip inside `docker build` cannot reach a package index from an
# air-gapped site, nor through a TLS-intercepting proxy whose CA only the host
# trusts. The host's pip already works, and a wheelhouse can be carried to a site
# that has no index at all. Versions come from constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# The images run Debian bookworm's CPython 3.11 on x86_64: fetch wheels with a
# Python of that kind so that pip picks the matching binary wheels.
$python -c 'import sys, platform; assert sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64", "the wheelhouse needs CPython 3.11 on x86_64 (set PYTHON=...)"'
deps=build/wheelhouse app=build/app-wheel
mkdir -p "$deps" "$app"

rm -f "$app"/*.whl
$python -m pip wheel --quiet --no-deps --wheel-dir "$app" .

# The app's dependencies as pyproject.toml lists them, and Flower's simulation extra.
$python - > "$deps/requirements.new" <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["simulation"]))
PY
if cmp -s "$deps/requirements.new" "$deps/requirements.txt" && cmp -s constraints.txt "$deps/constraints.txt"; then
  rm "$deps/requirements.new"
  echo "dependency wheels up to date ($(du -sh "$deps" | cut -f1) in $deps)"
  exit 0
fi
$python -m pip download --quiet --dest "$deps" --constraint constraints.txt --requirement "$deps/requirements.new"
mv "$deps/requirements.new" "$deps/requirements.txt"
cp constraints.txt "$deps/constraints.txt"
echo "dependency wheels: $(du -sh "$deps" | cut -f1) in $deps"
