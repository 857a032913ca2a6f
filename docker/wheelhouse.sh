#!/usr/bin/env bash
# Fetches, on the host, exactly the files that locks/ names for the images, each checked against
# its sha256 (pip --require-hashes: a file the index or a proxy substitutes fails here):
#   build/wheelhouse/       the image locks' wheels but torch's, pip's, and a copy of the locks
#                           (build/wheelhouse/locks/: the image build installs from them)
#   build/wheelhouse-cuda/  torch from PyPI with its CUDA libraries (several GB): only
#                           for TORCH=cuda images; the default (TORCH=cpu) takes
#                           Debian's CPU build of torch instead (docker/Dockerfile)
#   build/app-wheel/        this project's own wheel (the logging hook; changes with the code),
#                           built by the locked hatchling, and lock.txt: its sha256
# Kept apart so that a code change does not invalidate the image layers that
# install torch and Flower (a bind mount's content is part of a layer's cache key).
# A wheel already here is checked against the lock every run; one that does not match
# stops the script (it changed after it was fetched): nothing is replaced unasked.
#
# Why on the host: pip inside `docker build` cannot reach a package index from an
# air-gapped site, nor through a TLS-intercepting proxy whose CA only the host
# trusts. The host's pip already works, and a wheelhouse can be carried to a site
# that has no index at all. The locks come from `make lock` (docs/building.md).
#
#   docker/wheelhouse.sh            TORCH=cuda docker/wheelhouse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch=${TORCH:-cpu}
# The images run Debian trixie's CPython 3.13 on x86_64, whatever Python runs this:
# pip takes the binary wheels of that target (the locks name them).
target=(--only-binary=:all: --implementation cp --python-version 3.13 --abi cp313
        --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 41 -1 5); do target+=(--platform "manylinux_2_${minor}_x86_64"); done
deps=build/wheelhouse app=build/app-wheel cuda=build/wheelhouse-cuda backend=build/backend
mkdir -p "$deps/locks" "$app" "$cuda"

# fetch DIR LOCK...: DIR holds exactly the wheels the LOCKs name, each checked against its sha256.
fetch() {
  local dir=$1 wanted
  shift
  wanted=$(mktemp) && grep -h -v '^#' "$@" | sort -u > "$wanted"
  # "HASH  FILE" for sha256sum; then the files here that no lock names go (a stale wheelhouse).
  sed 's|^.* --hash=sha256:\([0-9a-f]*\)  # \(.*\)$|\1  \2|' "$wanted" > "$wanted.sums"
  find "$dir" -maxdepth 1 -type f -printf '%f\n' | sort \
    | comm -23 - <(cut -c67- "$wanted.sums" | sort) | sed "s|^|$dir/|" | xargs -r rm -f
  local present missing
  present=$(cd "$dir" && cut -c67- "$wanted.sums" | while read -r file; do [ -e "$file" ] && echo "$file"; done || true)
  if [ -n "$present" ] && ! (cd "$dir" && grep -F -f <(echo "$present") "$wanted.sums" | sha256sum --check --quiet --strict); then
    echo "error: a wheel in $dir does not match its sha256 in locks/ (above): it changed after it was" \
         "fetched. Delete it to fetch it again." >&2
    exit 1
  fi
  missing=$(cut -c67- "$wanted.sums" | grep -v -x -F -f <(echo "${present:-/}") || true)
  if [ -n "$missing" ]; then
    grep -F -f <(echo "$missing" | sed 's/^/# /') "$wanted" > "$wanted.missing"
    $python -m pip download --quiet --no-deps --require-hashes --dest "$dir" "${target[@]}" \
      --requirement "$wanted.missing"
  fi
  echo "$(wc -l < "$wanted") wheels, all as locked: $(du -sh "$dir" | cut -f1) in $dir"
  rm -f "$wanted" "$wanted".*
}

cp locks/build.txt locks/image-*.txt "$deps/locks/"
fetch "$deps" locks/build.txt locks/image-flower.txt locks/image-app-*.txt locks/image-simulation-*.txt
if [ "$torch" = cuda ]; then
  fetch "$cuda" locks/image-torch-cuda.txt
fi

# The project's wheel, built by the locked hatchling (no build isolation: pip would fetch
# an unlocked one). A fixed timestamp makes the wheel byte-identical when the code is: the
# image layers that install it stay cached.
if ! cmp -s locks/build.txt "$backend/build.txt"; then
  rm -rf "$backend" && $python -m venv "$backend"
  "$backend/bin/python" -m pip install --quiet --no-index --find-links "$deps" --require-hashes --no-deps \
    --requirement locks/build.txt
  cp locks/build.txt "$backend/build.txt"
fi
rm -f "$app"/*.whl
SOURCE_DATE_EPOCH=315532800 "$backend/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation \
  --wheel-dir "$app" .
wheel=$(cd "$app" && echo flowerdock-*.whl)
{ echo "# build/app-wheel/lock.txt: this project's wheel, built by docker/wheelhouse.sh from the checkout."
  echo "# roots: flowerdock"
  echo "flowerdock @ file:///app-wheel/$wheel --hash=sha256:$(sha256sum "$app/$wheel" | cut -d' ' -f1)  # $wheel"
} > "$app/lock.txt"
echo "this project's wheel: $wheel"
