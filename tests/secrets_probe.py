"""Which secrets this process can read: run inside a container, as a given user.

Looks at every file under every mount of the container (volumes, bind mounts,
tmpfs) and under the image's own writable places, and prints, as one JSON list,
each one it can open that is a secret: a private key (PEM or OpenSSH), or a
file named *.key, *.secret or *.token. Standard library only (python3 -I).
"""

import json
import os
import sys

SKIP = ("/proc", "/sys", "/dev", "/usr", "/opt/venv", "/etc/ssl", "/var/lib/dpkg")
SUFFIXES = (".key", ".secret", ".token")
MARKERS = (b"PRIVATE " + b"KEY-----",)  # split: this file is no key to a scan of the repository


def mount_points() -> set:
    points = {"/tmp", "/home", "/var/lib/flower", "/certs", "/etc/flowerdock", "/data"}
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1]
            if point != "/" and not point.startswith(SKIP):
                points.add(point)
    return points


def readable_secret(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            head = file.read(1 << 16)
    except OSError:
        return False
    return path.endswith(SUFFIXES) or any(marker in head for marker in MARKERS)


def main() -> None:
    found = set()
    for top in sorted(mount_points()):
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not os.path.join(folder, d).startswith(SKIP)]
            for name in files:
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path) and readable_secret(path):
                    found.add(path)
    print(json.dumps(sorted(found)))


if __name__ == "__main__":
    sys.exit(main())
