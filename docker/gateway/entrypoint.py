"""Runs nginx (the gateway) so that everything it prints is JSON Lines.

First it writes nginx.conf from its template with the limits this gateway is
given (settings.py); a setting that cannot work, or missing certificates, stop the
container at once with a line saying what to fix.

nginx writes its access log as JSON (the template) but its error log only as
text: each error-log line becomes one JSON object here (`gateway_log`, or
`tls_handshake_failed` with its reason).
"""

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from settings import SettingError, render, settings  # beside this file

TEMPLATE = Path("/etc/flowerdock/nginx.conf.template")
CONF = Path("/tmp/nginx.conf")
NEEDED = ("/certs/server/superlink.crt", "/certs/server/superlink.key", "/certs/server/ca.crt")
# 2026/11/24 19:40:11 [error] 12#12: *3 message
ERROR_LINE = re.compile(r"^\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)$")
# "SSL_do_handshake() failed (SSL: ...:tlsv1 alert unknown ca:SSL alert number 48) while SSL handshaking, client: 1.2.3.4, server: ..."
HANDSHAKE = re.compile(r"SSL_do_handshake\(\) failed \(SSL: (?:.*alert ([a-z ]+):SSL alert number \d+|(.*?))\).*client: ([^,]+)")
# "client timed out (110: Connection timed out) while SSL handshaking, client: 1.2.3.4, server: ..."
HANDSHAKE_TIMED_OUT = re.compile(r"timed out.*while SSL handshaking, client: ([^,]+)")
# Said again for every request the limits refuse: the access log's `gateway_refused` line
# already has it, with the client, path and reason.
REPEATS_ACCESS_LOG = ("limiting requests", "limiting connections")
LEVELS = {"emerg": "critical", "alert": "critical", "crit": "critical", "warn": "warning", "notice": "info"}


def emit(level: str, event: str, **fields) -> None:
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    line = json.dumps({"timestamp": now, "level": level, "event": event, "logger": "nginx", **fields})
    # One write for the line and its newline: nginx writes its access lines to the same
    # stdout, and with PYTHONUNBUFFERED print() would write them apart, letting one in between.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    unreadable = [path for path in NEEDED if not os.access(path, os.R_OK)]
    if unreadable:
        emit("error", "gateway_config_invalid", error=f"cannot read {', '.join(unreadable)}: mount the "
             "server folder made by certs/make-certs.sh at /certs/server, readable by uid 49999")
        return 2
    try:
        values = settings(dict(os.environ))
    except SettingError as exc:
        emit("error", "gateway_config_invalid", error=str(exc))
        return 2
    CONF.write_text(render(TEMPLATE, values))
    emit("info", "gateway_limits", **{name.lower(): values[name] for name in (
        "FLEET_MAX_BODY", "CONTROL_MAX_BODY", "FLEET_RATE_PER_CLIENT", "FLEET_BURST_PER_CLIENT",
        "FLEET_CONNECTIONS_PER_CLIENT", "FLEET_UPLOADS_TOTAL", "FLEET_REQUESTS_TOTAL", "HEADER_TIMEOUT", "BODY_TIMEOUT",
        "KEEPALIVE_TIMEOUT", "GATEWAY_WORKERS")},
         allowed_clients=values["ALLOWED_CLIENTS"] or "any")
    nginx = subprocess.Popen(["nginx", "-c", str(CONF), "-e", "stderr"], stderr=subprocess.PIPE, text=True)
    # docker stop sends SIGTERM: nginx finishes open requests on SIGQUIT.
    signal.signal(signal.SIGTERM, lambda *_: nginx.send_signal(signal.SIGQUIT))
    for line in nginx.stderr:
        match = ERROR_LINE.match(line.strip())
        level, message = (match.group(1), match.group(2)) if match else ("error", line.strip())
        if not message or message.startswith(REPEATS_ACCESS_LOG):
            continue
        handshake, timed_out = HANDSHAKE.search(message), HANDSHAKE_TIMED_OUT.search(message)
        if handshake:  # worth an alert of its own: a client that does not trust us, or we it
            emit("warning", "tls_handshake_failed", reason=handshake.group(1) or handshake.group(2),
                 client=handshake.group(3), message=message)
        elif timed_out:  # connected, never finished TLS within HEADER_TIMEOUT (slow or idle)
            emit("warning", "tls_handshake_failed", reason="timed out", client=timed_out.group(1), message=message)
        else:
            emit(LEVELS.get(level, level), "gateway_log", message=message)
    return nginx.wait()


if __name__ == "__main__":
    sys.exit(main())
