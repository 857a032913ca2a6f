"""This federation's app registry: the part of Flower's app hub API a SuperLink uses to
fetch a signed FAB, served from a read-only folder (docs/signed-apps.md).

`flwr run @publisher/app==1.0.0` makes the SuperLink POST {app_id, app_version} to
$FLWR_SUPERGRID_API_URL/hub/fetch-fab, expect {"fab_url", "verifications"}, and GET
the FAB from fab_url (flwr/superlink/servicer/control/control_handlers.py
`_get_remote_fab`, flwr/supercore/utils.py `request_download_link`). The SuperNodes
then check the signatures against their trusted-entities.yaml; this server vouches for
nothing, and the signatures hold whatever carries the bytes.

  REGISTRY_DIR  the folder scripts/publish_app.py writes (default /registry)
  PORT          default 8080; only on the server's private network

Every request is one JSON line; a malformed one is a 400 with a reason.
"""

from __future__ import annotations

import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from flowerdock_logging import get_logger

log = get_logger("app.registry")
REGISTRY = Path(os.getenv("REGISTRY_DIR", "/registry"))
# As Flower checks them (flwr/supercore/constant.py APP_ID_PATTERN, APP_VERSION_PATTERN).
APP_ID = re.compile(r"^@(?P<publisher>[a-z0-9][a-z0-9_.-]{0,63})/(?P<app>[a-z0-9][a-z0-9_.-]{0,63})$", re.I)
VERSION = re.compile(r"^\d+\.\d+\.\d+$")
MAX_REQUEST = 4096


def versions(folder: Path) -> list[str]:
    return sorted((p.stem for p in folder.glob("*.fab")), key=lambda v: tuple(int(n) for n in v.split(".")))


class Registry(BaseHTTPRequestHandler):
    server_version = "flowerdock-registry"

    def answer(self, status: int, body: bytes, kind: str = "application/json", **fields) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        log.info("registry_request", method=self.command, path=self.path, status=status,
                 client=self.client_address[0], **fields)

    def refuse(self, status: int, reason: str, detail=None) -> None:
        self.answer(status, json.dumps({"detail": detail if detail is not None else reason}).encode(), reason=reason)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path.rstrip("/") != "/v1/hub/fetch-fab":
            return self.refuse(404, "not served: only POST /v1/hub/fetch-fab")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_REQUEST:
            return self.refuse(400, f"a request body of 1..{MAX_REQUEST} bytes is expected")
        try:
            asked = json.loads(self.rfile.read(length))
            app, version = APP_ID.match(asked["app_id"]), asked.get("app_version")
        except (ValueError, KeyError, TypeError):
            return self.refuse(400, "the body must be JSON with app_id (and app_version)")
        if app is None or (version is not None and not VERSION.match(str(version))):
            return self.refuse(400, "app_id must be @publisher/app and app_version x.y.z")
        folder = REGISTRY / app["publisher"] / app["app"]
        known = versions(folder)
        version = version or (known[-1] if known else None)
        if version not in known:
            return self.refuse(404, f"{asked['app_id']}=={version} is not in this registry",
                               detail={"available_app_versions": known})
        signed = json.loads((folder / f"{version}.json").read_text())
        host = self.headers.get("Host") or f"app-registry:{self.server.server_port}"
        url = f"http://{host}/fab/{app['publisher']}/{app['app']}/{version}.fab"
        self.answer(200, json.dumps({"fab_url": url, "verifications": signed["verifications"]}).encode(),
                    app=f"{asked['app_id']}=={version}", sha256=signed["sha256"])

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            return self.answer(200, b'{"status": "ok"}')
        parts = self.path.split("/")
        if len(parts) != 5 or parts[1] != "fab" or not VERSION.match(parts[4].removesuffix(".fab")) or \
                not APP_ID.match(f"@{parts[2]}/{parts[3]}"):
            return self.refuse(404, "not served: GET /fab/<publisher>/<app>/<version>.fab")
        fab = REGISTRY / parts[2] / parts[3] / parts[4]
        if not fab.is_file():
            return self.refuse(404, "no such FAB")
        self.answer(200, fab.read_bytes(), "application/octet-stream")

    def log_message(self, *args) -> None:  # each request is logged once, as JSON, by answer()
        pass


def main() -> int:
    if not REGISTRY.is_dir():
        log.error("registry_config_invalid", error=f"{REGISTRY} is not a folder: mount the folder "
                  "scripts/publish_app.py writes at REGISTRY_DIR (REGISTRY_DIR on the server's compose)")
        return 2
    port = int(os.getenv("PORT", "8080"))
    log.info("registry_serving", folder=str(REGISTRY), port=port,
             apps=[f"@{p.parent.parent.name}/{p.parent.name}=={p.stem}" for p in sorted(REGISTRY.glob("*/*/*.fab"))])
    ThreadingHTTPServer(("0.0.0.0", port), Registry).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
