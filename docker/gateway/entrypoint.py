"""Runs nginx (the gateway) so that everything it prints is JSON Lines.

nginx writes its access log as JSON (nginx.conf) but its error log only as
text: each error-log line becomes one JSON object here (`gateway_log`, or
`tls_handshake_failed` with its reason). Missing certificates
stop the container at once with a line saying what to mount.
"""

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timezone

CONF = "/etc/flowerdock/nginx.conf"
NEEDED = ("/certs/server/superlink.crt", "/certs/server/superlink.key", "/certs/server/ca.crt")
# 2026/11/24 19:40:11 [error] 12#12: *3 message
ERROR_LINE = re.compile(r"^\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)$")
# "SSL_do_handshake() failed (SSL: ...:tlsv1 alert unknown ca:SSL alert number 48) while SSL handshaking, client: 1.2.3.4, server: ..."
HANDSHAKE = re.compile(r"SSL_do_handshake\(\) failed \(SSL: (?:.*alert ([a-z ]+):SSL alert number \d+|(.*?))\).*client: ([^,]+)")
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
    nginx = subprocess.Popen(["nginx", "-c", CONF, "-e", "stderr"], stderr=subprocess.PIPE, text=True)
    # docker stop sends SIGTERM: nginx finishes open requests on SIGQUIT.
    signal.signal(signal.SIGTERM, lambda *_: nginx.send_signal(signal.SIGQUIT))
    for line in nginx.stderr:
        match = ERROR_LINE.match(line.strip())
        level, message = (match.group(1), match.group(2)) if match else ("error", line.strip())
        if not message:
            continue
        handshake = HANDSHAKE.search(message)
        if handshake:  # worth an alert of its own: a client that does not trust us, or we it
            emit("warning", "tls_handshake_failed", reason=handshake.group(1) or handshake.group(2),
                 client=handshake.group(3), message=message)
        else:
            emit(LEVELS.get(level, level), "gateway_log", message=message)
    return nginx.wait()


if __name__ == "__main__":
    sys.exit(main())
