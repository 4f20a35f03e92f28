"""A streamed put of 200 MB into S3 (moto's server on loopback): the RSS the writer's process
grows by and the CPU seconds it spends, for the relay's S3Backend (obstore) and, when given an
interpreter that has it, aioboto3 doing the same multipart upload by hand.

`python bench/archive_s3.py [--quick] [--mb 200] [--rounds 3] [--aioboto3-python PATH]`,
or `async run(quick)` for `python -m bench`. Each put runs in a fresh child process so that
one engine's imports, thread pools and allocator never count against the other's; the S3
server is a third process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 64 * 1024
PART = 8 * 1024 * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: tokio's and asyncio's
    return usage.ru_utime + usage.ru_stime


async def _chunks(total: int) -> AsyncIterator[bytes]:
    """Fresh 64 KiB bytes objects, as a provider's response body would hand them over."""
    block = os.urandom(CHUNK)
    for i in range(total // CHUNK):
        yield block[:1] + bytes([i % 256]) + block[2:]


async def _put_obstore(endpoint: str, bucket: str, key: str, size: int) -> int:
    from service.archive.s3 import S3Backend

    backend = S3Backend.from_url(f"s3://{bucket}/bench", endpoint, None)
    stored = await backend.put(key, _chunks(size), "video/mp4")
    if key == "done.bin":
        await backend.close()  # the relay's shutdown: see S3Backend.close()
    return stored.bytes


async def _put_aioboto3(endpoint: str, bucket: str, key: str, size: int) -> int:
    import aioboto3  # only in the interpreter given by --aioboto3-python

    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as s3:
        key = f"bench/{key}"
        upload = await s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4")
        parts: list[dict[str, Any]] = []
        buffer = bytearray()
        sent = 0

        async def send_part() -> None:
            n = len(parts) + 1
            body = bytes(buffer)
            got = await s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=n, Body=body
            )
            parts.append({"PartNumber": n, "ETag": got["ETag"]})
            buffer.clear()

        try:
            async for chunk in _chunks(size):
                buffer += chunk
                sent += len(chunk)
                if len(buffer) >= PART:
                    await send_part()
            if buffer:
                await send_part()
            await s3.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
            raise
        return sent


def child(engine: str, endpoint: str, bucket: str, size: int) -> dict[str, float]:
    """One measured put in this process; a small put first warms the client up."""
    put = _put_obstore if engine == "obstore" else _put_aioboto3

    async def main() -> dict[str, float]:
        await put(endpoint, bucket, "warm.bin", 2 * CHUNK)
        # reset VmHWM to the current RSS (Linux: clear_refs 5), so the peak is this put's
        Path("/proc/self/clear_refs").write_text("5")
        rss0, cpu0, t0 = _status_kib("VmRSS"), _cpu(), time.perf_counter()
        sent = await put(endpoint, bucket, f"{engine}.bin", size)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        assert sent == size, (sent, size)
        await put(endpoint, bucket, "done.bin", CHUNK)
        return {
            "peak_growth_mib": (_status_kib("VmHWM") - rss0) / 1024,
            "cpu_s": cpu,
            "wall_s": wall,
        }

    return asyncio.run(main())


def _run_child(
    python: str, engine: str, endpoint: str, env: dict[str, str], size: int
) -> dict[str, float]:
    from tests.s3server import BUCKET

    argv = ["--child", engine, "--endpoint", endpoint, "--bucket", BUCKET, "--size", str(size)]
    out = subprocess.run(
        [python, __file__, *argv],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{engine} put exited with {out.returncode}: {out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(mb: int, rounds: int, boto_python: str | None) -> dict[str, list[dict[str, float]]]:
    """Alternate the engines `rounds` times against one server; every put is `mb` MB."""
    sys.path.insert(0, str(ROOT))
    from tests.s3server import S3Server

    server = S3Server()
    server.start()
    try:
        engines = [("obstore", sys.executable)]
        if boto_python:
            engines.append(("aioboto3", boto_python))
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in engines}
        for _ in range(rounds):
            for name, python in engines:
                got = _run_child(
                    python, name, server.endpoint, server.env(), mb * 1000 * 1000 // CHUNK * CHUNK
                )
                results[name].append(got)
                print(f"{name}: {got}", file=sys.stderr)
        return results
    finally:
        server.stop()


def summary(results: dict[str, list[dict[str, float]]], mb: int) -> list[str]:
    lines = []
    for name, runs in results.items():
        growth = statistics.median(r["peak_growth_mib"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        lines.append(
            f"{name}: {mb} MB put, median of {len(runs)}: peak RSS growth {growth:.1f} MiB, "
            f"CPU {cpu:.2f} s ({cpu / mb * 1000:.1f} ms per MB), wall {wall:.1f} s"
        )
    return lines


async def run(quick: bool) -> Any:
    """For `python -m bench`: obstore only, as rows of the results table."""
    from bench.common import Outcome, Row

    mb, rounds = (50, 1) if quick else (200, 3)
    results = await asyncio.to_thread(measure, mb, rounds, None)
    runs = results["obstore"]
    growth = statistics.median(r["peak_growth_mib"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    name = "S3 archive"
    return Outcome(
        [
            Row(
                name,
                f"streamed put of {mb} MB: peak RSS growth",
                f"{growth:.1f} MiB",
                goal="≤ 32 MiB (4 parts)",
                result=Row.verdict(growth <= 4 * PART / 2**20),
            ),
            Row(name, f"streamed put of {mb} MB: CPU of the writer", f"{cpu:.2f} s", result="info"),
        ],
        [
            "S3 archive: bench/archive_s3.py; moto's server in its own process on 127.0.0.1; the "
            "put in a fresh child process, VmHWM reset (clear_refs 5) after a warm-up put."
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--aioboto3-python", help="an interpreter with aioboto3 installed")
    parser.add_argument("--child", choices=["obstore", "aioboto3"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.endpoint, args.bucket, args.size)))
        return 0
    mb, rounds = (50, 1) if args.quick else (args.mb, args.rounds)
    for line in summary(measure(mb, rounds, args.aioboto3_python), mb):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
