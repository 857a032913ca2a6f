"""The local SuperLink that `flwr run` starts for a host simulation (`make simulation`).

Flower's CLI starts `flower-superlink --simulation` on 127.0.0.1:39091 the first time,
keeps it running after the run, and reuses whatever answers on that port next
time: another checkout's, or another user's, whose working directory and code are
not this checkout's. This tells them apart by the SuperLink's own command line,
which names its database under $FLWR_HOME (this checkout's .flwr).

  check  exit 0 when the port is free or held by this checkout's SuperLink; else
         exit 2, saying who holds it and what to do
  stop   end this checkout's local SuperLink and what it started (its session), and
         nothing else
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

PORT = int(os.getenv("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091"))
LISTEN = "0A"  # TCP state in /proc/net/tcp


def ours_marker() -> str:
    home = os.getenv("FLWR_HOME") or str(Path.home() / ".flwr")
    return str(Path(home).resolve() / "local-superlink") + "/"


def listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == LISTEN:
                inodes.add(fields[9])
    return inodes


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def holders(inodes: set[str]) -> list[int]:
    """Processes (that this user may see) with one of these sockets open."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(pid)
        except OSError:  # gone, or another user's
            continue
    return found


def our_superlinks() -> list[int]:
    marker = ours_marker()
    return [pid for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
            if "flower-superlink" in (line := command_line(pid)) and marker in line]


def check() -> int:
    inodes = listening_inodes(PORT)
    if not inodes:
        return 0
    pids = holders(inodes)
    if any(ours_marker() in command_line(pid) for pid in pids):
        return 0
    who = "; ".join(f"pid {pid}: {command_line(pid)[:200]}" for pid in pids) or "a process of another user"
    print(f"local_superlink: 127.0.0.1:{PORT} is taken by a SuperLink that is not this checkout's ({who}). "
          f"`flwr run` would send this run there, to another checkout's code and folders. Stop it (in its own "
          f"checkout: make simulation-stop), or run on another port: "
          f"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=39191 FLWR_LOCAL_CONTROL_API_PORT=39193 make simulation",
          file=sys.stderr)
    return 2


def stop() -> int:
    pids = our_superlinks()
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGTERM)  # Flower starts it in a session of its own
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and our_superlinks():
        time.sleep(0.2)
    for pid in our_superlinks():
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    print(f"local_superlink: stopped {len(pids)} local SuperLink(s) of this checkout" if pids
          else "local_superlink: none of this checkout's is running", file=sys.stderr)
    return 0


if __name__ == "__main__":
    actions = {"check": check, "stop": stop}
    if len(sys.argv) != 2 or sys.argv[1] not in actions:
        sys.exit(f"usage: {sys.argv[0]} check|stop")
    sys.exit(actions[sys.argv[1]]())
