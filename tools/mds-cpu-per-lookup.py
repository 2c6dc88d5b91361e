#!/usr/bin/env python3
"""The MDS's CPU per lookup, measured apart from its clients' cost.

Starts a geds-mds and a gedsd from BIN, puts one 4 KiB object (its bytes inline at the MDS), then drives lookups of it
over CONNECTIONS raw TCP connections from this one thread (closed loop: one request outstanding per connection) for
SECONDS after a 0.5 s warm-up, and divides the MDS's user+system CPU (/proc/PID/stat) by the lookups answered. Compare
two builds by running it on each in turns (docs/PERFORMANCE.md, "MDS per-request cost").

Usage: tools/mds-cpu-per-lookup.py BIN [CONNECTIONS=16] [SECONDS=5]
"""

import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HEADER = struct.Struct(">HBBQI")  # magic, version, kind, request id, payload length (Sources/GedsWire/Frame.swift)
REQUEST, REPLY_OBJECT, LOOKUP = 1, 7, 10


def wire_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    binaries = sys.argv[1]
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5
    root = tempfile.mkdtemp(prefix="mds-cpu-", dir="/dev/shm")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mds_address = f"127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    mds = subprocess.Popen([f"{binaries}/geds-mds", "--listen", mds_address, "--log-level", "warning"], **quiet)
    time.sleep(0.5)
    node = subprocess.Popen([f"{binaries}/gedsd", "--mds", mds_address, "--listen", "127.0.0.1:0", "--tier0",
                             f"{root}/tier0", "--name", "n1", "--host-id", "h1", "--log-level", "warning"], **quiet)
    time.sleep(1.0)
    try:
        source = f"{root}/source"
        with open(source, "wb") as file:
            file.write(os.urandom(4096))
        bucket, key = b"bench", b"some/key-of-a-typical-length"
        for command in (["mb", bucket.decode()], ["put", source, f"{bucket.decode()}/{key.decode()}", "--to", "n1"]):
            subprocess.run([f"{binaries}/geds", "--mds", mds_address, *command], check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "GEDS_HOST_ID": "h1"})
        payload = bytes([LOOKUP]) + wire_string(bucket) + wire_string(key)
        request = HEADER.pack(0x4745, 1, REQUEST, 7, len(payload)) + payload
        selector = selectors.DefaultSelector()
        for _ in range(connections):
            connection = socket.create_connection(("127.0.0.1", port))
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.setblocking(False)
            selector.register(connection, selectors.EVENT_READ, bytearray())
            connection.send(request)
        warm_until = time.monotonic() + 0.5
        start = None
        answered = 0
        cpu_at_start = 0.0
        while True:
            now = time.monotonic()
            if start is None and now >= warm_until:
                start, cpu_at_start, answered = now, cpu_seconds(mds.pid), 0
            if start is not None and now - start >= seconds:
                break
            for entry, _ in selector.select(1):
                connection, pending = entry.fileobj, entry.data
                pending += connection.recv(1 << 16)
                while len(pending) >= HEADER.size:
                    length = HEADER.unpack_from(pending)[4]
                    if len(pending) < HEADER.size + length:
                        break
                    if pending[HEADER.size] != REPLY_OBJECT:
                        sys.exit(f"unexpected reply tag {pending[HEADER.size]}")
                    del pending[:HEADER.size + length]
                    answered += 1
                    connection.send(request)
        elapsed = time.monotonic() - start
        used = cpu_seconds(mds.pid) - cpu_at_start
        print(f"{answered / elapsed:.0f} lookups/s; MDS CPU {used * 1e6 / answered:.2f} µs per lookup "
              f"({connections} connections, {elapsed:.1f} s, load average {os.getloadavg()[0]:.1f})")
    finally:
        for process in (node, mds):
            process.terminate()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
