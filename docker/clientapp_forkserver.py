"""A warm start for Flower's ClientApp processes: a fork server.

Flower's SuperExec starts `flwr-clientapp` for every message it hands a ClientApp
(train, evaluate), and each of those processes used to import Python, flwr, numpy
and torch afresh: about 5 s of a 2-core machine per message, for a training step
that takes 0.3 s. This server imports all of that once. The `flwr-clientapp` that
the SuperNode image puts first on PATH (docker/flwr-clientapp) connects here and
hands over its arguments, environment, working directory and its stdin, stdout
and stderr; the server forks a child that becomes that ClientApp process, runs
Flower's own `flwr-clientapp` code with those, and exits. Flower's isolation model
holds: every message runs in a fresh process of its own, which ends after it; no
two messages ever share one. The server itself never runs app code, and a child
that crashes (a segfault, a SIGKILL, an exception) is reaped and reported to its
launcher, nothing more.

What the server does not import: the app itself (`app.*`; the logging hook is a
package of its own, flowerdock_logging). Flower loads the submitted FAB's code in
the child, as it would in a cold process.

    clientapp_forkserver.py [--socket PATH] [--target MODULE:FUNCTION] [--preload "MODULES"]

The socket is created only once the preloads are imported. Until then, a
launcher waits for it while PATH.starting exists (made first thing here, as the
user the server runs as, so that it may remove it); with no server at all,
launchers start Flower's own executable (a cold start).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable

from flowerdock_logging import get_logger, guard_program_output

log = get_logger("app.forkserver")

SOCKET = os.getenv("CLIENTAPP_FORKSERVER_SOCKET", "/tmp/flowerdock-clientapp.sock")
# Flower's own `flwr-clientapp` console script.
TARGET = "flwr.supernode.cli.flwr_clientapp:flwr_clientapp"
# What every ClientApp of this image imports anyway. Not the app: see above.
PRELOAD = ("flwr.supernode.cli.flwr_clientapp flwr.app flwr.clientapp numpy torch torch.nn torch.optim "
           "torch.utils.data cbor2 structlog")
MAX_REQUEST = 1 << 20  # argv + environment, as JSON; a real one is a few kB
HEADER = struct.Struct("!I")


def preload(modules: list[str]) -> list[str]:
    """Import what children will need; a module that is missing is only slower later."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # noqa: BLE001 - any import error: the child imports it cold
            log.warning("forkserver_preload_failed", module=name, error=f"{type(exc).__name__}: {exc}")
    return loaded


def load_target(spec: str) -> Callable[[], object]:
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)


def read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """The launcher's request: a length-prefixed JSON object, and its stdio descriptors."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    try:
        if len(fds) != 3 or len(data) < HEADER.size:
            raise ValueError(f"expected 3 descriptors and a header, got {len(fds)} and {len(data)} bytes")
        (size,) = HEADER.unpack_from(data)
        if size > MAX_REQUEST:
            raise ValueError(f"request of {size} bytes (at most {MAX_REQUEST})")
        body = data[HEADER.size:]
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ValueError("launcher hung up mid-request")
            body += chunk
        request = json.loads(body)
        if not (isinstance(request.get("argv"), list) and isinstance(request.get("env"), dict)
                and isinstance(request.get("cwd"), str)):
            raise ValueError("request lacks argv, env or cwd")
        return request, fds
    except Exception:
        for fd in fds:
            os.close(fd)
        raise


def become(request: dict, fds: list[int]) -> None:
    """In the child: take on the launcher's stdio, environment, directory and argv."""
    for number, fd in enumerate(fds):
        os.dup2(fd, number)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = list(request["argv"])
    name = os.path.basename(sys.argv[0] if sys.argv else "flwr-clientapp")
    try:  # `ps`, `pkill flwr-clientapp` and top see the ClientApp, not this server
        with open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        pass
    if "numpy" in sys.modules:  # numpy's global generator would be the same in every child
        sys.modules["numpy"].random.seed()
    guard_program_output()


def run_child(conn: socket.socket, listener: socket.socket, request: dict, fds: list[int],
              target: Callable[[], object]) -> None:
    """The forked ClientApp process: never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        conn.close()
        listener.close()
        become(request, fds)
        try:
            target()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # noqa: BLE001 - report it as an uncaught error would be
            sys.excepthook(*sys.exc_info())
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the child must never return into the server loop
        traceback.print_exc()
    finally:
        os._exit(code)


class Server:
    def __init__(self, listener: socket.socket, target: Callable[[], object]) -> None:
        self.listener, self.target = listener, target
        self.children: dict[int, socket.socket] = {}
        self.stopping = False

    def serve(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop (wakeup fd)
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._stop)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(wake_read, selectors.EVENT_READ, "signal")
        while not self.stopping:
            for key, _ in selector.select():
                if key.data == "accept":
                    self._accept()
                else:
                    while True:
                        try:
                            if not os.read(wake_read, 512):
                                break
                        except BlockingIOError:
                            break
            self._reap()

    def _stop(self, number: int, _frame: object) -> None:
        self.stopping = True
        for pid in list(self.children):  # each ClientApp ends as its own signal handler decides
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)  # a launcher that connects and says nothing cannot hold the server
        try:
            request, fds = read_request(conn)
        except (OSError, ValueError) as exc:
            log.warning("forkserver_bad_request", error=str(exc))
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(conn, self.listener, request, fds, self.target)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self._tell(pid, {"pid": pid})

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                self._tell(pid, {"exit": os.waitstatus_to_exitcode(status)})
                self.children.pop(pid).close()

    def _tell(self, pid: int, message: dict) -> None:
        try:
            self.children[pid].sendall(json.dumps(message).encode() + b"\n")
        except OSError:  # the launcher is gone (its SuperExec ended): the child goes on
            pass


def listen(path: str) -> socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # only this user's processes may ask for a fork
    try:
        listener.bind(path + ".new")
    finally:
        os.umask(old_umask)
    listener.listen(64)
    os.rename(path + ".new", path)  # appears only when ready to serve
    try:  # launchers that found the server starting stop waiting for it
        os.unlink(path + ".starting")
    except FileNotFoundError:
        pass
    return listener


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=SOCKET)
    parser.add_argument("--target", default=TARGET, help="MODULE:FUNCTION each child runs (default: %(default)s)")
    parser.add_argument("--preload", default=os.getenv("CLIENTAPP_PRELOAD", PRELOAD),
                        help="modules to import once, space-separated (env CLIENTAPP_PRELOAD)")
    args = parser.parse_args()
    open(args.socket + ".starting", "a").close()  # launchers: wait, it is importing
    started = time.monotonic()
    loaded = preload(args.preload.split())
    target = load_target(args.target)
    try:
        listener = listen(args.socket)
    except OSError as exc:
        log.error("forkserver_failed", socket=args.socket, error=str(exc),
                  hint="ClientApps start cold (Flower's own flwr-clientapp)")
        sys.exit(1)
    log.info("forkserver_ready", socket=args.socket, preloaded=loaded,
             import_s=round(time.monotonic() - started, 2))
    try:
        Server(listener, target).serve()
    finally:
        listener.close()
        try:
            os.unlink(args.socket)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
