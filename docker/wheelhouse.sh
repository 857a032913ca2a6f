#!/usr/bin/env bash
# Fetches, on the host, every wheel the images install:
#   build/wheelhouse/       the dependencies but torch (changes only when constraints.txt does)
#   build/wheelhouse-cuda/  torch from PyPI with its CUDA libraries (several GB): only
#                           for TORCH=cuda images; the default (TORCH=cpu) takes
#                           Debian's CPU build of torch instead (docker/Dockerfile)
#   build/app-wheel/        this project's own wheel (the logging hook; changes with the code)
# Kept apart so that a code change does not invalidate the image layers that
# install torch and Flower (a bind mount's content is part of a layer's cache key).
#
# Why on the host: pip inside `docker build` cannot reach a package index from an
# air-gapped site, nor through a TLS-intercepting proxy whose CA only the host
# trusts. The host's pip already works, and a wheelhouse can be carried to a site
# that has no index at all. Versions come from constraints.txt.
#
#   docker/wheelhouse.sh            TORCH=cuda docker/wheelhouse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch=${TORCH:-cpu}
# The images run Debian trixie's CPython 3.13 on x86_64, whatever Python runs this:
# pip picks the binary wheels of that target.
# Every manylinux tag up to trixie's glibc 2.41 (wheels name the oldest glibc they need).
target=(--only-binary=:all: --implementation cp --python-version 3.13 --abi cp313
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 41 -1 17); do target+=(--platform "manylinux_2_${minor}_x86_64"); done
# pip itself runs from its wheel in the image build, and stays out of the images.
pip_version=26.3
deps=build/wheelhouse app=build/app-wheel cuda=build/wheelhouse-cuda
mkdir -p "$deps" "$app" "$cuda"

rm -f "$app"/*.whl
# A fixed timestamp makes the wheel byte-identical when the code is: the image layers
# that install it stay cached.
SOURCE_DATE_EPOCH=315532800 $python -m pip wheel --quiet --no-deps --wheel-dir "$app" .

# The app's dependencies as pyproject.toml lists them, and Flower's simulation extra.
$python - "$pip_version" > "$deps/requirements.new" <<'PY'
import sys
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("# for CPython 3.13 on x86_64 (manylinux), pip", sys.argv[1])
print("\n".join(project["dependencies"] + project["optional-dependencies"]["simulation"]))
PY
grep -v '^torch==' "$deps/requirements.new" > "$deps/requirements.notorch"
if cmp -s "$deps/requirements.new" "$deps/requirements.txt" && cmp -s constraints.txt "$deps/constraints.txt"; then
  echo "dependency wheels up to date ($(du -sh "$deps" | cut -f1) in $deps)"
else
  rm -f "$deps"/*.whl "$deps"/*.tar.gz
  $python -m pip download --quiet --dest "$deps" "${target[@]}" --constraint constraints.txt \
    --requirement "$deps/requirements.notorch"
  $python -m pip download --quiet --no-deps --dest "$deps" "${target[@]}" "pip==$pip_version"
  mv "$deps/requirements.new" "$deps/requirements.txt"
  cp constraints.txt "$deps/constraints.txt"
  echo "dependency wheels: $(du -sh "$deps" | cut -f1) in $deps"
fi
rm -f "$deps/requirements.new" "$deps/requirements.notorch"

if [ "$torch" = cuda ]; then
  $python -m pip download --quiet --dest "$cuda" "${target[@]}" --constraint constraints.txt \
    "$(grep '^torch==' "$deps/requirements.txt")"
  echo "torch with CUDA: $(du -sh "$cuda" | cut -f1) in $cuda"
fi
