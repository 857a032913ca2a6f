"""A stand-in ClientApp for the fork-server tests: what it does is chosen by argv[1]."""

import json
import os
import signal
import sys
import threading
import time


def main() -> None:
    action = sys.argv[1]
    if action == "describe":
        with open("/proc/self/comm") as comm:
            name = comm.read().strip()
        print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv, "cwd": os.getcwd(),
                          "marker": os.environ.get("MARKER"), "comm": name, "threads": threading.active_count(),
                          "app_imported": "app" in sys.modules, "input": sys.stdin.readline().strip()}))
    elif action == "exit":
        sys.exit(int(sys.argv[2]))
    elif action == "raise":
        raise RuntimeError("the ClientApp failed")
    elif action == "segfault":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sleep":
        print(json.dumps({"sleeping": os.getpid()}), flush=True)
        time.sleep(60)
