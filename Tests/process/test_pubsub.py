"""Pub/sub and wait-for-object with real processes: `geds watch`, `geds wait`, raw subscribers on the wire.

Events are checked as `geds watch` prints them (`REVISION EVENT BUCKET/KEY`, a rename `REVISION renamed OLD NEW`),
in revision order and each exactly once, including across a killed and restarted watcher and a dropped connection.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from geds_harness import (KIND_REPLY, KIND_REQUEST, REP_FAILURE, REQ_CREATE_BUCKET, RawConnection, binary, frame,
                          wire_string)

REQ_SET_METADATA, REQ_SUBSCRIBE = 16, 32
REP_SUBSCRIBED, REP_EVENTS, REP_PROGRESS, REP_SUBSCRIPTION_ENDED = 16, 17, 18, 19
SCOPE_BUCKET, SCOPE_PREFIX, SCOPE_KEY = 1, 2, 3
END_COMPACTED, END_TOO_SLOW = 1, 2


# MARK: helpers


def set_metadata(bucket: str, key: str, value: str) -> bytes:
    return (bytes([REQ_SET_METADATA]) + wire_string(bucket) + wire_string(key) + struct.pack(">I", 1)
            + wire_string("n") + wire_string(value))


def subscribe(scope: int, bucket: str, key: str = "", after: int | None = None) -> bytes:
    payload = bytes([REQ_SUBSCRIBE, scope]) + wire_string(bucket) + wire_string(key)
    return payload + (b"\x00" if after is None else b"\x01" + struct.pack(">Q", after))


def decode_events(payload: bytes) -> list[tuple[int, int, str, str]]:
    """(revision, kind, bucket, key) of each event in an `events` reply."""
    (count,) = struct.unpack_from(">I", payload, 1)
    offset, events = 5, []
    for _ in range(count):
        revision, kind = struct.unpack_from(">QB", payload, offset)
        offset += 9
        names = []
        for _ in range(2):
            (length,) = struct.unpack_from(">I", payload, offset)
            names.append(payload[offset + 4:offset + 4 + length].decode())
            offset += 4 + length
        if payload[offset]:
            for _ in range(2):
                (length,) = struct.unpack_from(">I", payload, offset + 1)
                offset += 4 + length
        offset += 1
        events.append((revision, kind, names[0], names[1]))
    return events


def burst(host: str, port: int, requests: list[bytes]) -> None:
    """Sends the requests pipelined on one connection and checks every answer is `ok`."""
    with RawConnection(host, port, timeout=60) as conn:
        conn.send(b"".join(frame(KIND_REQUEST, index + 1, payload) for index, payload in enumerate(requests)))
        for _ in requests:
            reply = conn.read_frame(timeout=60)
            assert reply is not None and reply.tag == 1, f"request failed: {reply}"


class Watcher:
    """`geds watch` with its stdout read line by line as it is printed."""

    def __init__(self, cluster, *args, mds: str = ""):
        self.proc = cluster.popen("watch", *args, mds=mds, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.pending = b""

    def read(self, count: int, timeout: float = 20) -> list[str]:
        """Waits until `count` lines in all were printed (each line must arrive as soon as it is printed)."""
        deadline = time.monotonic() + timeout
        descriptor = self.proc.stdout.fileno()
        while len(self.lines) < count:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([descriptor], [], [], max(remaining, 0))
            if not ready:
                raise AssertionError(f"only {len(self.lines)} of {count} lines after {timeout}s: {self.lines[-5:]}; "
                                     f"stderr: {self.stderr_if_done()}")
            chunk = os.read(descriptor, 1 << 16)
            if not chunk:
                raise AssertionError(f"watch ended after {len(self.lines)} of {count} lines: {self.stderr_if_done()}")
            self.pending += chunk
            *complete, self.pending = self.pending.split(b"\n")
            self.lines += [line.decode() for line in complete]
        return self.lines

    def stderr_if_done(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def put(cluster, target: str, data: bytes = b"x", mds: str = "") -> None:
    """Seals `data` as BUCKET/KEY through the CLI (via a gedsd of that MDS)."""
    source = f"/dev/shm/ps-put-{os.getpid()}-{threading.get_ident()}"
    with open(source, "wb") as handle:
        handle.write(data)
    try:
        cluster.geds("put", source, target, mds=mds).ok()
    finally:
        os.unlink(source)


def revisions(lines: list[str]) -> list[int]:
    return [int(line.split()[0]) for line in lines]


def fresh_bucket(request, tag: str) -> str:
    del request  # the name is unique per process and moment
    return f"ps-{tag}-{os.getpid() % 10000}-{int(time.monotonic() * 1000) % 100000}"


@pytest.fixture
def small_mds(cluster):
    """A second MDS with a 10-event history and a 50-event subscriber queue, for compaction and cut-off tests."""
    daemons = []

    def start(*args: str):
        daemon = cluster._spawn("geds-mds", f"mds-pubsub-{len(daemons)}", "",
                                [binary("geds-mds"), "--listen", "127.0.0.1:0", *args])
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.kill()


# MARK: events of every kind, in order


def test_every_kind_of_change_in_order(cluster, node_a, request):
    bucket = fresh_bucket(request, "kinds")
    # Watching from revision 0 replays the (unique) bucket's history, so nothing can be missed at the start.
    watcher = Watcher(cluster, bucket, "--from", "0", "--count", "12")
    other = Watcher(cluster, f"{bucket}/dir/", "--from", "0", "--count", "5")
    cluster.geds("mb", bucket).ok()
    put(cluster, f"{bucket}/a", b"x" * 1000)
    put(cluster, f"{bucket}/a", b"y" * 1000)
    cluster.geds("meta", f"{bucket}/a", "stage=one").ok()
    cluster.geds("mv", f"{bucket}/a", f"{bucket}/b").ok()
    cluster.geds("cp", f"{bucket}/b", f"{bucket}/c").ok()
    put(cluster, f"{bucket}/dir/x")
    put(cluster, f"{bucket}/dir/y")
    cluster.geds("rm", "--prefix", f"{bucket}/dir/").ok()
    cluster.geds("rm", f"{bucket}/c").ok()
    cluster.geds("rb", "--force", bucket).ok()
    lines = watcher.read(12)
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"bucket-created {bucket}", f"created {bucket}/a", f"created {bucket}/a", f"metadata {bucket}/a",
        f"renamed {bucket}/a {bucket}/b", f"copied {bucket}/c", f"created {bucket}/dir/x", f"created {bucket}/dir/y",
        f"deleted {bucket}/dir/x", f"deleted {bucket}/dir/y", f"deleted {bucket}/c", f"bucket-deleted {bucket}",
    ]
    assert revisions(lines) == sorted(set(revisions(lines))), "revisions must increase strictly"
    # A prefix scope sees its keys only (and the bucket's own events).
    assert [line.split(" ", 1)[1] for line in other.read(5)] == [
        f"bucket-created {bucket}", f"created {bucket}/dir/x", f"created {bucket}/dir/y",
        f"deleted {bucket}/dir/x", f"deleted {bucket}/dir/y"]
    assert watcher.proc.wait(timeout=10) == 0
    assert other.proc.wait(timeout=10) == 0


def test_live_lines_arrive_as_printed(cluster, node_a, request):
    """Without --from the watch starts now; each line reaches a pipe while the watcher keeps running."""
    bucket = fresh_bucket(request, "live")
    cluster.geds("mb", bucket).ok()
    watcher = Watcher(cluster, bucket)
    time.sleep(1.0)  # let it subscribe (an event before that would not be "live")
    for index in range(3):
        put(cluster, f"{bucket}/k{index}")
        assert watcher.read(index + 1)[-1].endswith(f"created {bucket}/k{index}")
    assert watcher.proc.poll() is None
    watcher.kill()


# MARK: resuming


def test_killed_watcher_resumes_from_its_last_revision(cluster, node_a, request):
    bucket = fresh_bucket(request, "resume")
    cluster.geds("mb", bucket).ok()
    host, port = cluster.mds.host, cluster.mds.port
    cluster.geds("meta", f"{bucket}/none", "a=b").fails("no such object")  # a failed change: no event
    total = 2000
    first = Watcher(cluster, bucket, "--from", "0")
    writer = threading.Thread(target=lambda: [burst(host, port, [set_metadata(bucket, "k", f"{i}-{j}") for j in range(20)])
                                             for i in range(total // 20)])
    # The key must exist for metadata changes.
    put(cluster, f"{bucket}/k")
    writer.start()
    seen = first.read(300)
    first.kill()  # kill -9 mid-stream
    last = revisions(seen)[-1]
    second = Watcher(cluster, bucket, "--from", str(last), "--count", str(total + 2 - len(seen)))
    writer.join()
    rest = second.read(total + 2 - len(seen), timeout=60)
    assert second.proc.wait(timeout=10) == 0
    every = seen + rest
    assert revisions(every) == sorted(set(revisions(every))), "an event was repeated or reordered"
    assert every[0].endswith(f"bucket-created {bucket}") and every[1].endswith(f"created {bucket}/k")
    assert sum(1 for line in every if line.endswith(f"metadata {bucket}/k")) == total


def test_subscription_survives_a_dropped_connection(cluster, node_a, request):
    """The library subscribes again after the last revision it received when its connection to the MDS breaks."""
    bucket = fresh_bucket(request, "drop")
    cluster.geds("mb", bucket).ok()
    put(cluster, f"{bucket}/k")
    proxy = Proxy(cluster.mds.host, cluster.mds.port)
    try:
        watcher = Watcher(cluster, bucket, "--from", "0", mds=f"127.0.0.1:{proxy.port}")
        watcher.read(2)
        for round_ in range(3):
            burst(cluster.mds.host, cluster.mds.port, [set_metadata(bucket, "k", f"{round_}-{i}") for i in range(100)])
            cluster.wait_until(lambda: proxy.pairs, 10, "the watcher to connect (again)", interval=0.01)
            proxy.drop_all()  # every connection through the proxy is reset, mid-stream or not
            burst(cluster.mds.host, cluster.mds.port, [set_metadata(bucket, "k", f"{round_}-after-{i}") for i in range(100)])
        lines = watcher.read(2 + 600, timeout=30)
        assert revisions(lines) == sorted(set(revisions(lines)))
        assert proxy.dropped >= 3
        watcher.kill()
    finally:
        proxy.close()


def test_wait_survives_a_dropped_connection(cluster, node_a, request):
    """A wait the MDS holds is called again when its connection breaks, and still ends with the object's seal."""
    bucket = fresh_bucket(request, "dropwait")
    cluster.geds("mb", bucket).ok()
    proxy = Proxy(cluster.mds.host, cluster.mds.port)
    try:
        waiter = cluster.popen("wait", f"{bucket}/late", "--timeout", "60", mds=f"127.0.0.1:{proxy.port}",
                               stderr=subprocess.PIPE)
        for _ in range(2):
            cluster.wait_until(lambda: proxy.pairs, 10, "the waiter to connect (again)", interval=0.01)
            time.sleep(0.3)  # the held call is at the MDS
            proxy.drop_all()
        cluster.wait_until(lambda: proxy.pairs, 10, "the waiter to connect again", interval=0.01)
        time.sleep(0.3)
        assert waiter.poll() is None, "the wait ended before the object existed"
        put(cluster, f"{bucket}/late")
        _, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, err.decode(errors="replace")
        assert proxy.dropped >= 2
    finally:
        proxy.close()


class Proxy:
    """A TCP forwarder that can reset every connection it carries."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.dropped = 0
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for end in pair:
                # shutdown first: a close alone is deferred while a pump thread is blocked reading the socket.
                for step in (lambda: end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
                             lambda: end.shutdown(socket.SHUT_RDWR), end.close):
                    try:
                        step()
                    except OSError:
                        pass
        self.dropped += len(pairs)

    def close(self):
        self.closing = True
        self.listener.close()
        self.drop_all()


# MARK: history, many subscribers, slow subscribers


def test_compacted_after_history_wrapped(cluster, small_mds):
    mds = small_mds("--event-history", "10")
    burst(mds.host, mds.port, [bytes([REQ_CREATE_BUCKET]) + wire_string(f"wrap-{i:03d}") for i in range(25)])
    result = cluster.geds("watch", "wrap-000", "--from", "3", mds=mds.endpoint, timeout=30)
    result.fails("compacted", "oldest revision the MDS keeps is 16")
    # Inside the history: a resume works (wrap-020 was revision 21).
    lines = cluster.geds("watch", "wrap-020", "--from", "15", "--count", "1", mds=mds.endpoint, timeout=30).ok().lines
    assert lines == ["21 bucket-created wrap-020"]
    # On the wire: the answer carries the oldest revision kept.
    with RawConnection(mds.host, mds.port) as conn:
        conn.send(frame(KIND_REQUEST, 5, subscribe(SCOPE_BUCKET, "wrap-000", after=0)))
        ended = conn.read_frame()
        assert ended.tag == REP_SUBSCRIPTION_ENDED and ended.request_id == 5
        assert struct.unpack_from(">BQ", ended.payload, 1) == (END_COMPACTED, 16)
        assert conn.read_frame() is None  # and the connection closes


@pytest.mark.parametrize("loops", [[], ["--event-loops", "1"]], ids=["default-loops", "one-loop"])
def test_thousand_subscriptions(cluster, small_mds, loops):
    """With one event loop too, where each subscriber's connection shares the committing thread."""
    mds = small_mds(*loops)
    burst(mds.host, mds.port, [bytes([REQ_CREATE_BUCKET]) + wire_string("many")])
    scopes = [(SCOPE_BUCKET, ""), (SCOPE_PREFIX, "dir/"), (SCOPE_KEY, "dir/k"), (SCOPE_KEY, "other")]
    connections = []
    try:
        for index in range(1000):
            conn = RawConnection(mds.host, mds.port, timeout=30)
            scope, key = scopes[index % len(scopes)]
            conn.send(frame(KIND_REQUEST, index + 1, subscribe(scope, "many", key)))
            connections.append((conn, scope, key))
        for conn, _, _ in connections:
            reply = conn.read_frame(timeout=30)
            assert reply.tag == REP_SUBSCRIBED and struct.unpack_from(">Q", reply.payload, 1) == (1,)
        # A bucket event reaches every scope in the bucket.
        burst(mds.host, mds.port, [bytes([5]) + wire_string("many") + b"\x00"])  # deleteBucket("many")
        for conn, _, _ in connections:
            reply = conn.read_frame(timeout=30)
            assert reply.tag == REP_EVENTS, reply
            assert decode_events(reply.payload) == [(2, 7, "many", "")]
    finally:
        for conn, _, _ in connections:
            conn.close()


def test_slow_subscriber_is_cut_off_without_slowing_others(cluster, small_mds):
    mds = small_mds("--subscriber-queue", "50")
    burst(mds.host, mds.port, [bytes([REQ_CREATE_BUCKET]) + wire_string("slow")])
    long_key = "k" * 1000
    # A key to change: created through the CLI with a gedsd of this MDS.
    node = cluster._spawn("gedsd", f"node-slow-{os.getpid()}", "host-slow",
                          [binary("gedsd"), "--mds", mds.endpoint, "--listen", "127.0.0.1:0",
                           "--tier0", os.path.join(cluster.root, "tier0-slow"), "--name", "node-slow"])
    try:
        put(cluster, f"slow/{long_key}", mds=mds.endpoint)
        sleeper = socket.create_connection((mds.host, mds.port))
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.sendall(frame(KIND_REQUEST, 9, subscribe(SCOPE_BUCKET, "slow")))
        reader = Watcher(cluster, "slow", "--from", "2", mds=mds.endpoint)
        count = 3000
        started = time.monotonic()
        burst(mds.host, mds.port, [set_metadata("slow", long_key, str(i)) for i in range(count)])
        lines = reader.read(count, timeout=60)
        elapsed = time.monotonic() - started
        assert revisions(lines) == list(range(3, 3 + count))
        # The sleeper now reads: what was sent before the cut, then the answer naming the revision to resume from.
        conn = RawConnection.__new__(RawConnection)
        conn.sock, conn.buffer, conn.closed = sleeper, b"", False
        received, end = [], None
        while (reply := conn.read_frame(timeout=20)) is not None:
            if reply.tag == REP_EVENTS:
                received += [event[0] for event in decode_events(reply.payload)]
            elif reply.tag == REP_SUBSCRIPTION_ENDED:
                end = struct.unpack_from(">BQ", reply.payload, 1)
        assert received == list(range(3, 3 + len(received))), "events before the cut are in order"
        assert len(received) < count, "the sleeper must have been cut off"
        if end is not None:
            assert end == (END_TOO_SLOW, received[-1] if received else 2)
        # It resumes from there and misses nothing.
        resume_from = received[-1] if received else 2
        rest = cluster.geds("watch", "slow", "--from", str(resume_from), "--count", str(count + 2 - resume_from),
                            mds=mds.endpoint, timeout=60).ok().lines
        assert revisions(rest) == list(range(resume_from + 1, count + 3))
        print(f"{count} events of 1 KiB names to a reading watcher in {elapsed:.2f} s while another was cut off")
    finally:
        node.kill()


def test_progress_notifications(cluster, small_mds):
    mds = small_mds("--progress-ms", "100")
    burst(mds.host, mds.port, [bytes([REQ_CREATE_BUCKET]) + wire_string("idle"),
                               bytes([REQ_CREATE_BUCKET]) + wire_string("busy")])
    with RawConnection(mds.host, mds.port) as conn:
        conn.send(frame(KIND_REQUEST, 3, subscribe(SCOPE_BUCKET, "idle")))
        assert conn.read_frame().tag == REP_SUBSCRIBED
        burst(mds.host, mds.port, [bytes([REQ_CREATE_BUCKET]) + wire_string(f"busy-{i}") for i in range(5)])
        deadline = time.monotonic() + 5
        while True:
            reply = conn.read_frame(timeout=5)
            assert reply.tag == REP_PROGRESS, reply
            if struct.unpack_from(">Q", reply.payload, 1) == (7,) or time.monotonic() > deadline:
                break
        assert struct.unpack_from(">Q", reply.payload, 1) == (7,)


# MARK: wait


def test_wait(cluster, node_a, request):
    bucket = fresh_bucket(request, "wait")
    cluster.geds("mb", bucket).ok()
    result = cluster.geds("wait", f"{bucket}/late", "--timeout", "0.5")
    result.fails("did not appear")
    assert 0.5 <= result.elapsed < 10
    waiter = cluster.popen("wait", f"{bucket}/late", "--timeout", "30", stderr=subprocess.PIPE)
    time.sleep(0.5)
    put(cluster, f"{bucket}/late")
    assert waiter.wait(timeout=30) == 0
    cluster.geds("wait", f"{bucket}/late", "--timeout", "0").ok()  # exists: at once
    # A rename onto the name counts; a wait on a bucket that does not exist yet waits for it.
    waiter = cluster.popen("wait", f"{bucket}-new/moved", "--timeout", "30", stderr=subprocess.PIPE)
    time.sleep(0.5)
    cluster.geds("mb", f"{bucket}-new").ok()
    cluster.geds("mv", f"{bucket}/late", f"{bucket}-new/moved").ok()
    assert waiter.wait(timeout=30) == 0
    assert cluster.geds("wait", "nobucketslash").rc != 0


def test_three_stage_pipeline_synchronised_by_wait(cluster, node_a, request):
    """Stage k waits for its input i, then writes its output i; run 100 times, no wake-up may be lost (each wait
    has a generous timeout, so a lost one fails instead of hanging)."""
    bucket = fresh_bucket(request, "pipe")
    cluster.geds("mb", bucket).ok()
    runs = 100
    env = {"GEDS_MDS": cluster.mds_address, "GEDS": binary("geds"), "B": bucket, "N": str(runs)}
    stage = ('for i in $(seq $N); do "$GEDS" wait "$B/s{input}-$i" --timeout 60 || exit 1; '
             'echo "s{output}-$i" | "$GEDS" put - "$B/s{output}-$i" || exit 1; done')
    procs = [subprocess.Popen(["bash", "-c", stage.format(input=k, output=k + 1)], env={**os.environ, **env},
                              stderr=subprocess.PIPE) for k in (2, 1)]
    producer = subprocess.Popen(["bash", "-c", stage.replace('"$GEDS" wait "$B/s{input}-$i" --timeout 60 || exit 1; ', "")
                                 .format(output=1)], env={**os.environ, **env}, stderr=subprocess.PIPE)
    for proc in [producer, *procs]:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err.decode(errors="replace")
    listing = cluster.geds("ls", f"{bucket}/s3-").ok().lines
    assert len(listing) == runs
    assert cluster.geds("cat", f"{bucket}/s3-{runs}").ok().out == f"s3-{runs}\n".encode()
