"""The egress transport against its peer, httpx's default transport (httpcore), in the same run.

Usage: python bench/egress.py [--requests 3000] [--concurrency 32] [--big-mib 20]

A local HTTP/1.1 server in its own process answers POSTs (a small body, or `--big-mib` MiB on /big).
Printed: requests/s of the webhook client (`EgressTransport`: one DNS resolution and policy check per new
connection, keep-alive) and of a plain `httpx.AsyncClient`, both with `post_json`'s capped read, and their
ratio; then the time and the Python heap peak (tracemalloc) of one oversized answer read through
`post_json` (capped at 64 KiB) against `client.post(...).content` through httpcore (read whole).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import tracemalloc

import httpx
from common import free_port

from segmentflow.policies.egress import parse_allow
from segmentflow.services.egress import egress_client, post_json

SMALL = b'{"ok":true}'


def serve(port: int, big: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if head.startswith(b"POST /big"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big)
                    chunk = b"x" * 65536
                    for _ in range(big // len(chunk)):
                        writer.write(chunk)
                        await writer.drain()
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(SMALL), SMALL))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def rate(client: httpx.AsyncClient, url: str, n: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            answer = await post_json(client, url, {"i": i}, headers={"Idempotency-Key": str(i)})
            assert answer.status_code == 200

    await asyncio.gather(*(one(i) for i in range(min(n, 200))))  # warm the pools
    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - start)


async def oversized(read: object) -> tuple[float, int, int]:
    tracemalloc.start()
    start = time.perf_counter()
    size = await read  # type: ignore[misc]
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak, size


async def main_async(args: argparse.Namespace) -> None:
    port = free_port()
    big = args.big_mib * 1024 * 1024
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--big-mib", str(args.big_mib)]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                async with httpx.AsyncClient() as probe:
                    await probe.post(url + "/ok", json={})
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        policy = parse_allow("127.0.0.1/32")
        async with egress_client(policy=policy, max_connections=args.concurrency) as ours:
            ours_rate = await rate(ours, url + "/ok", args.requests, args.concurrency)
        limits = httpx.Limits(max_connections=args.concurrency)
        async with httpx.AsyncClient(limits=limits) as peer:
            peer_rate = await rate(peer, url + "/ok", args.requests, args.concurrency)
        print(f"{args.requests} small POSTs, {args.concurrency} in flight, local server in its own process")
        print(f"  egress transport (policy-checked connections): {ours_rate:,.0f} requests/s")
        print(f"  httpx default transport (httpcore, unchecked): {peer_rate:,.0f} requests/s")
        print(f"  ratio: {ours_rate / peer_rate:.2f}x")

        async def capped() -> int:
            async with egress_client(policy=policy) as client:
                return len((await post_json(client, url + "/big", {})).body)

        async def whole() -> int:
            async with httpx.AsyncClient(timeout=60) as client:
                return len((await client.post(url + "/big", json={})).content)

        c_time, c_peak, c_size = await oversized(capped())
        w_time, w_peak, w_size = await oversized(whole())
        print(f"one {args.big_mib} MiB answer:")
        for label, ms, size, peak in (
            ("egress client, capped at 64 KiB", c_time * 1000, c_size, c_peak),
            ("httpx default, read whole      ", w_time * 1000, w_size, w_peak),
        ):
            print(f"  {label}: {ms:.1f} ms, {size:,} bytes kept, heap peak {peak / 1e6:.2f} MB")
        print(
            f"  heap peak: {w_peak / max(c_peak, 1):.0f}x less with the cap ({big:,} B sent, {c_size:,} kept)"
        )
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--big-mib", type=int, default=20)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.big_mib * 1024 * 1024)
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
