#!/usr/bin/env sh
# Certificates and keys for a Flower deployment (see certs/make_certs.py; its code is in certs/certlib/):
#
#   certs/make-certs.sh init --san DNS:flower.example.org --nodes 2
#   certs/make-certs.sh server --san DNS:flower.example.org --force   # rotate the server certificate
#   certs/make-certs.sh node supernode-3                               # one more SuperNode
#   certs/make-certs.sh show                                           # names and expiry dates
#
# Runs with the first Python that has `cryptography`: this project's .venv, the
# system's python3, or the SuperLink image (docker), so a fresh server needs
# nothing but Docker and the image (CERTS_USE_DOCKER=1 goes straight there).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ "${CERTS_USE_DOCKER:-0}" != 1 ]; then
  for python in "$here/../.venv/bin/python" python3; do
    if "$python" -c 'import cryptography' 2>/dev/null; then
      exec "$python" "$here/make_certs.py" "$@"
    fi
  done
fi
out=${CERTS_OUT:-$here/out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec docker run --rm --user root --entrypoint python3 -e SUPERLINK_SANS="${SUPERLINK_SANS:-}" \
  -e LOG_FORMAT=console -e CERTS_OUT_SHOWN="$out" \
  -v "$here/make_certs.py:/usr/local/bin/make_certs.py:ro" -v "$here/certlib:/usr/local/bin/certlib:ro" -v "$out:/out" \
  "flowerdock/superlink:${FLOWERDOCK_VERSION:-1.0.0}" /usr/local/bin/make_certs.py --out /out "$@"
