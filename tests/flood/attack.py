"""An anonymous client's worst against the gateway's public port: no CA, no key.

Run in a container of its own (tests/test_gateway.py, scripts/bench_gateway.py):

  python3 attack.py HOST PORT [--connections 500] [--burst 3000] [--seconds 60]

Everything at once, for about --seconds, and then one JSON object on stdout with
what each attack saw (HTTP statuses by count, bytes sent, times):

  connections   N TLS connections at once, each a push-object whose body trickles in
                slower than the gateway's body timeout: a few are held (then 408), the
                rest are refused for their number (503)
  slow_header   connections that send their request header a byte at a time (408)
  slow_body     uploads that stop sending halfway (408); one of them first, alone
  big_body      a declared 2 GB body (413 before any of it is read), and 2 GB sent
                chunked with no declared length (413 once past the limit)
  burst         unauthenticated Fleet requests as fast as a few connections go: the
                rate limit answers most (503), the SuperLink the rest (its refusal);
                first, 20 alone, within the rate allowed: the SuperLink answers them
Standard library only: it runs in any image with Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from collections import Counter

GB2 = 2 * 10**9


def tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # it has no CA: it is nobody
    return context


async def connect(host: str, port: int):
    return await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls(), server_hostname=host), 30)


def header(path: str, host: str, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/protobuf"]
    lines += [f"Content-Length: {length}"] if length is not None else []
    lines += ["Transfer-Encoding: chunked"] if chunked else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def status_of(reader: asyncio.StreamReader, timeout: float) -> int | str:
    """The status of the answer, or what happened instead."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        return "no answer"
    except (ConnectionError, ssl.SSLError):
        return "reset"
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else "closed"


async def trickle_upload(host: str, port: int, pause: float, seen: Counter) -> None:
    """A 4 MB push-object whose bytes come one every `pause` seconds."""
    try:
        reader, writer = await connect(host, port)
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        seen["connect failed"] += 1
        return
    try:
        writer.write(header("/v1/fleet/push-object", host, 4 * 2**20))
        await writer.drain()
        answer = asyncio.ensure_future(status_of(reader, 120))
        while not answer.done():
            writer.write(b"x")
            await writer.drain()
            await asyncio.wait([answer], timeout=pause)
        seen[await answer] += 1
    except (ConnectionError, ssl.SSLError):
        seen["reset"] += 1
    finally:
        writer.close()


async def slow_header(host: str, port: int, seen: Counter) -> None:
    try:
        reader, writer = await connect(host, port)
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        seen["connect failed"] += 1
        return
    request = header("/v1/fleet/pull-messages", host, 10) + b"x" * 10
    try:
        answer = asyncio.ensure_future(status_of(reader, 120))
        for byte in request:
            if answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait([answer], timeout=1.0)
        seen[await answer] += 1
    except (ConnectionError, ssl.SSLError):
        seen["reset"] += 1
    finally:
        writer.close()


async def stalled_body(host: str, port: int, seen: Counter) -> None:
    """Half a body, then nothing."""
    try:
        reader, writer = await connect(host, port)
        writer.write(header("/v1/fleet/push-object", host, 2 * 2**20) + b"x" * 2**20)
        await writer.drain()
        seen[await status_of(reader, 120)] += 1
        writer.close()
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        seen["reset"] += 1


async def stalled_alone(host: str, port: int) -> dict:
    """One stalled upload with nothing else going on, and how long the gateway held it."""
    seen, started = Counter(), time.monotonic()
    await stalled_body(host, port, seen)
    [(status, _)] = seen.items()
    return {"status": status, "seconds": round(time.monotonic() - started, 3)}


async def declared_2gb(host: str, port: int) -> dict:
    reader, writer = await connect(host, port)
    started = time.monotonic()
    writer.write(header("/v1/fleet/push-object", host, GB2))
    await writer.drain()
    status = await status_of(reader, 30)
    writer.close()
    return {"status": status, "seconds": round(time.monotonic() - started, 3)}


async def chunked_2gb(host: str, port: int) -> dict:
    """2 GB in 1 MiB chunks, with no length said; how much got in before the refusal."""
    reader, writer = await connect(host, port)
    started, sent = time.monotonic(), 0
    writer.write(header("/v1/fleet/push-object", host, chunked=True))
    answer = asyncio.ensure_future(status_of(reader, 120))
    chunk = f"{2**20:x}\r\n".encode() + b"x" * 2**20 + b"\r\n"
    try:
        while sent < GB2 and not answer.done():
            writer.write(chunk)
            await writer.drain()
            sent += 2**20
        status = await answer
    except (ConnectionError, ssl.SSLError):
        status = answer.result() if answer.done() else "reset"
    writer.close()
    return {"status": status, "bytes_sent": sent, "seconds": round(time.monotonic() - started, 3)}


async def burst(host: str, port: int, count: int, seen: Counter, workers: int = 8) -> dict:
    """`count` pull-messages with a garbage body, over `workers` keep-alive connections."""
    started = time.monotonic()
    left = [count]

    async def worker() -> None:
        reader = writer = None
        while left[0] > 0:
            left[0] -= 1
            try:
                if writer is None:
                    reader, writer = await connect(host, port)
                writer.write(header("/v1/fleet/pull-messages", host, 16) + b"\x0a\x0e" + b"x" * 14)
                await writer.drain()
                status = await status_of(reader, 30)
                seen[status] += 1
                closing = False
                while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
                    name, _, value = line.decode(errors="replace").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    closing |= name.lower() == "connection" and "close" in value.lower()
                await reader.readexactly(length)
                if closing or not isinstance(status, int):
                    writer.close()
                    writer = None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError, ValueError,
                    UnboundLocalError):
                seen["reset"] += 1
                writer = None
    await asyncio.gather(*(worker() for _ in range(workers)))
    return {"requests": count, "seconds": round(time.monotonic() - started, 2)}


async def until(deadline: float, attack) -> None:
    """One attacker, again and again, for the whole window."""
    while time.monotonic() < deadline:
        await attack()
        await asyncio.sleep(5)  # a held connection, not a handshake flood: those cost the attacker as much


async def main(host: str, port: int, connections: int, burst_count: int, seconds: float) -> dict:
    seen = {name: Counter() for name in ("connections", "slow_header", "slow_body", "burst")}
    started = time.monotonic()
    # First, alone: with the flood on, this client's quota of requests at once could refuse them
    # (503) before their size or their slowness does.
    big = {"declared": await declared_2gb(host, port), "chunked": await chunked_2gb(host, port)}
    stalled = await stalled_alone(host, port)
    within_rate = Counter()  # a few requests at a pace the limits allow: they reach the SuperLink
    await burst(host, port, 20, within_rate, workers=2)
    deadline = time.monotonic() + seconds  # the flood's own window, after the attacks alone
    # The trickle is slower than the body timeout, for the few that get in.
    tasks = [until(deadline, lambda: trickle_upload(host, port, 12.0, seen["connections"]))
             for _ in range(connections)]
    tasks += [until(deadline, lambda: slow_header(host, port, seen["slow_header"])) for _ in range(20)]
    tasks += [until(deadline, lambda: stalled_body(host, port, seen["slow_body"])) for _ in range(10)]
    flood = asyncio.ensure_future(asyncio.gather(*tasks))
    bursts = []
    while time.monotonic() < deadline:
        bursts.append(await burst(host, port, burst_count, seen["burst"]))
    await flood
    return {"seconds": round(time.monotonic() - started, 1), "big_body": big, "stalled_alone": stalled,
            "within_rate": {str(k): v for k, v in within_rate.items()}, "bursts": bursts,
            **{name: {str(k): v for k, v in counter.items()} for name, counter in seen.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.host, args.port, args.connections, args.burst, args.seconds))))
