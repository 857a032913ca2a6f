"""The processes of a SuperNode container, and which user each runs as.

A ClientApp runs whatever code a run ships in its FAB. It must not read the
node's private key (it could then act as this node from anywhere), so the two
run as different users:

  flower-supernode    the key's owner (uid 49998 from certs/make-certs.sh; in
                      compose.yaml, each replica's own uid): it reads the key, talks
                      to the SuperLink and serves the Runtime API on 127.0.0.1:9094
  flower-superexec,   uid 49999 (flwr), which cannot read the key: Flower's `process`
  the ClientApps,     isolation, where the SuperExec runs apart from the SuperNode
  the fork server,    and takes ClientApp tasks from its Runtime API
  the site-data watch

The entrypoint starts as root with only the capabilities to change user and to
signal its children (compose.yaml: SETUID, SETGID, KILL); it reads no key and no
data itself. Started as any other user, all run as that user, and it says so
(`clientapp_isolation_off`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flowerdock_logging import get_logger

log = get_logger("app.entrypoint")

CLIENTAPP_UID = 49999  # the images' `flwr` user
SUPERNODE_UID = 49998  # the owner of a key made by certs/make-certs.sh, and the daemon's user without one
# The daemon's own home: Flower may write there, ClientApps must not read it.
DAEMON_HOME = "/tmp/flowerdock-supernode-home"
RUNTIME_API = "127.0.0.1:9094"  # the SuperNode's, on the container's loopback only


class ConfigError(Exception):
    """A setting that cannot work; the message says what to fix."""


def separated() -> bool:
    return os.getuid() == 0


def daemon_uid(key: Path | None) -> int | None:
    """Who flower-supernode runs as: the owner of its key (None: as this process)."""
    if not separated():
        log.warning("clientapp_isolation_off", uid=os.getuid(),
                    hint="started as a user other than root: the ClientApps run as that user too and can "
                         "read this node's key; compose.yaml and compose.client.yaml start it as root")
        return None
    if key is None:  # --insecure: no key, but the daemon's state is still not the ClientApps'
        return SUPERNODE_UID
    info = key.stat()
    if info.st_uid in (0, CLIENTAPP_UID):
        raise ConfigError(f"{key} belongs to uid {info.st_uid}: the ClientApps run as uid {CLIENTAPP_UID} and "
                          f"the SuperNode never as root; give the key to the SuperNode's own user "
                          f"(sudo chown 49998:49998 {key.name}, as certs/make-certs.sh does)")
    if info.st_mode & 0o077:
        raise ConfigError(f"{key} is readable by others (mode {info.st_mode & 0o777:o}): chmod 600 it")
    return info.st_uid


def as_user(uid: int | None) -> dict:
    """Popen arguments that start a child as uid (and its group, and no other)."""
    if uid is None or not separated():
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


def daemon_environment() -> dict[str, str]:
    return {**os.environ, "HOME": DAEMON_HOME, "FLWR_HOME": f"{DAEMON_HOME}/.flwr"}


def clientapp_environment() -> dict[str, str]:
    return {**os.environ, "HOME": "/home/flwr", "FLWR_HOME": "/home/flwr/.flwr"}


# What Flower logs when its Fleet loop has given up for good (flwr/supercore/retry/http_retry.py).
GAVE_UP = ("SSL/TLS handshake error detected", "Giving up reconnection")
# What it logs when the SuperLink refuses to activate this node's key.
NOT_ACTIVATED = b"Failed to activate SuperNode"


def supervise(command: list[str], uid: int | None = None, on_start=None) -> int:
    """Run Flower, pass its lines through, and end it when its loop has given up.

    Flower runs in a process group of its own: when it ends, its children would
    otherwise live on and keep the container up but useless. `on_start` runs once
    Flower is started (the SuperExec goes next to it).
    """
    flower = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                              env=daemon_environment() if uid is not None else None, **as_user(uid))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: flower.send_signal(number))
    gave_up, not_activated = threading.Event(), threading.Event()

    def pass_lines_through() -> None:
        for raw in flower.stdout:
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            if NOT_ACTIVATED in raw:
                not_activated.set()
            if not gave_up.is_set() and any(sign.encode() in raw for sign in GAVE_UP):
                gave_up.set()
                log.error("supernode_lost_superlink", superlink=os.environ["SUPERLINK"],
                          reason=raw.decode(errors="replace").strip()[:300],
                          hint="Flower gave up on the SuperLink: restarting this SuperNode (restart policy)")
                flower.terminate()

    reader = threading.Thread(target=pass_lines_through, daemon=True)
    reader.start()
    if on_start:
        on_start()
    code = flower.wait()
    try:
        os.killpg(flower.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left
        pass
    reader.join(timeout=5)
    code = code if code >= 0 else 128 - code  # killed by a signal: 128 + its number, as a shell says
    if gave_up.is_set():
        return 1
    if not_activated.is_set():
        log.error("supernode_not_activated", exit_code=code,
                  hint="the SuperLink refused this node's key: it is not registered, or it was revoked, or "
                       "the SuperLink still holds this node's previous session (a crash less than a minute "
                       "ago: the session expires after two missed heartbeats, 60 s); the restart policy "
                       "tries again")
    elif code != 0:
        log.error("supernode_exited", exit_code=code, hint="the restart policy starts it again")
    return code


class Child:
    """A helper process as the ClientApps' user, restarted if it dies (unless `fatal`)."""

    def __init__(self, name: str, command: list[str], fatal: bool = False) -> None:
        self.name, self.command, self.fatal = name, command, fatal
        self.process: subprocess.Popen | None = None
        self.stopping = False

    def start(self) -> Child:
        self._spawn()
        threading.Thread(target=self._keep_running, daemon=True).start()
        return self

    def _spawn(self) -> None:
        # A session of its own: stopping it ends what it started (a fork server's ClientApps).
        self.process = subprocess.Popen(self.command, start_new_session=True, env=clientapp_environment(),
                                        **as_user(CLIENTAPP_UID))

    failed = threading.Event()  # a fatal child died: the SuperNode ends, and not with 0

    def _keep_running(self) -> None:
        while True:
            code = self.process.wait()
            if self.stopping:
                return
            self.exited(code)
            if self.fatal:
                log.error(f"{self.name}_exited", exit_code=code, hint="ending this SuperNode: the restart "
                          "policy starts a fresh one")
                Child.failed.set()
                os.kill(os.getpid(), signal.SIGTERM)  # supervise() passes it to Flower, which ends
                return
            log.error(f"{self.name}_exited", exit_code=code, hint="restarting it")
            time.sleep(1)
            if self.stopping:
                return
            self._spawn()

    def exited(self, code: int) -> None:
        """What a death leaves behind (a subclass cleans it up)."""

    def stop(self) -> None:
        self.stopping = True
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def superexec() -> Child:
    """Flower's SuperExec for ClientApps, apart from the SuperNode: it asks the SuperNode's
    Runtime API for tasks and starts `flwr-clientapp` (the warm launcher) for each. Its
    death ends the node: no message would run."""
    return Child("superexec", ["flower-superexec", "--insecure", "--runtime-api-address", RUNTIME_API], fatal=True)


class ForkServer(Child):
    """The fork server behind the image's warm `flwr-clientapp`, restarted if it dies.

    Without it, the launcher starts Flower's own executable: a ClientApp then pays
    its imports again (seconds), nothing else changes.
    """

    SCRIPT = Path(__file__).with_name("clientapp_forkserver.py")
    SOCKET = Path(os.getenv("CLIENTAPP_FORKSERVER_SOCKET", "/tmp/flowerdock-clientapp.sock"))
    STARTING = SOCKET.with_name(SOCKET.name + ".starting")  # made by the server; launchers wait while it exists

    def __init__(self) -> None:
        super().__init__("forkserver", [sys.executable, str(self.SCRIPT), "--socket", str(self.SOCKET)])

    def exited(self, code: int) -> None:
        self.STARTING.unlink(missing_ok=True)  # /tmp is root's: the entrypoint may remove it
        log.warning("forkserver_down", hint="meanwhile ClientApps start cold")


SITE_DATA_STATE = Path("/tmp/flowerdock-site-data.json")  # written by site_data_watch.py


def site_data_watch(folder: str, label_column: str) -> Child:
    """The site's data, checked as the ClientApps will read it (their user, their
    permissions), at start and whenever it changes; site_data_watch.py writes what it
    found where the health probe reads it. Returns once the first check is done."""
    SITE_DATA_STATE.unlink(missing_ok=True)
    script = Path(__file__).with_name("site_data_watch.py")
    watch = Child("site_data_watch", [sys.executable, str(script), folder, label_column, str(SITE_DATA_STATE)],
                  fatal=True)
    watch._spawn()
    while not SITE_DATA_STATE.exists():
        if (code := watch.process.poll()) is not None:  # a setting it cannot use: it said which
            raise ConfigError(f"the site-data check stopped (exit {code}): see the line above")
        time.sleep(0.1)
    threading.Thread(target=watch._keep_running, daemon=True).start()
    return watch

