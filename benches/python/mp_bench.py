#!/usr/bin/env python3
"""Python side of multiproc's comparison benchmark.

Measures CPython's own ``multiprocessing`` on the same workloads that
``multiproc-bench`` (crates/multiproc-bench) runs against multiproc, so the
two can be compared in one run. Python 3.11+ standard library only.

Usage::

    python3 benches/python/mp_bench.py WORKLOAD [--n N] [--quick]
        [--start-method fork|spawn|forkserver] [--processes P]
    python3 benches/python/mp_bench.py list

Each result is printed as one JSON object per line::

    {"workload": "pipe_rtt_small", "system": "python-mp", "value": 45.1, "unit": "us"}

``system`` is ``python-mp``, except for ``process_start_join`` where it names
the start method (``python-mp-fork``, ``python-mp-forkserver``,
``python-mp-spawn``). ``MB/s`` means 10**6 bytes per second.

Conventions:

* ``--n`` overrides the workload's iteration count; ``--quick`` picks a
  smaller one so that every workload finishes in a few seconds on a slow
  2-core VM. Without either, the default count is used.
* ``--start-method`` selects the multiprocessing context (default: Python's
  platform default, ``fork`` on Linux with 3.11). For ``process_start_join``
  it selects which method is measured; without it all three are.
* ``--processes`` is the pool size for ``pool_*`` (default ``os.cpu_count()``,
  as ``Pool()``) and the number of workers for ``dict_update`` (default 2).
* The two sides of two-process workloads are pinned to the first two CPUs
  the process may run on (normally CPUs 0 and 1), when there are at least
  two. Workloads with more processes are left unpinned.
* Process start-up is never timed (except in ``process_start_join``): the
  processes do a short warm-up, meet at a barrier, and the timed phase
  starts after it. Timings use ``time.perf_counter`` (CLOCK_MONOTONIC, so
  stamps taken in different processes are comparable).

Exit status: 0 on success, 1 if a workload fails (a wrong final value, a
child that crashed or timed out), 2 on a usage error (unknown workload).
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import time

SYSTEM = "python-mp"

# How long any child may take before the run is declared failed (seconds).
JOIN_TIMEOUT = 300.0

# Warm-up iterations before the timed phase of the message workloads.
WARMUP = 1000


class BenchError(Exception):
    """A workload failed: reported on stderr, exit status 1."""


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def emit(workload, value, unit, system=SYSTEM, **extra):
    """Print one result as a JSON line (flushed: the Rust side reads a pipe)."""
    record = {"workload": workload, "system": system, "value": float(value), "unit": unit}
    record.update({k: float(v) for k, v in extra.items()})
    print(json.dumps(record), flush=True)


def emit_rtt(workload, samples_ns, total_ns):
    """One round-trip record in us: the mean, and p50/p99/p99.9/max of every round trip.

    Each sample includes one clock read, as on the Rust side."""
    s = sorted(samples_ns)
    n = len(s)

    def q(f):
        return s[min(n - 1, int(f * n))] / 1e3

    emit(workload, total_ns / n / 1e3, "us", p50=q(0.5), p99=q(0.99), p999=q(0.999),
         max=s[-1] / 1e3)


def _allowed_cpus():
    """The CPUs this process may run on, sorted; empty if affinity is unsupported."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def pin(side):
    """Pin the calling process to the side-th allowed CPU (side 0 or 1).

    Does nothing when fewer than two CPUs are available, so the benchmark
    still runs (unpinned) on a single-CPU machine.
    """
    cpus = _allowed_cpus()
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[side]})


class pinned_parent:
    """Context manager: pin the parent as side 0, restore its affinity after."""

    def __init__(self, side=0):
        self.side = side
        self.saved = None

    def __enter__(self):
        if hasattr(os, "sched_getaffinity"):
            self.saved = os.sched_getaffinity(0)
        pin(self.side)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.sched_setaffinity(0, self.saved)
        return False


def kill_all(procs):
    """Kill (SIGKILL) and reap every started process still alive."""
    for p in procs:
        if p.pid is not None and p.is_alive():
            p.kill()
            p.join(5)


def join_all(procs, timeout=JOIN_TIMEOUT):
    """Join every process; kill all and raise BenchError on timeout or crash."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                raise BenchError(f"child {p.name} did not finish within {timeout:g} s")
            if p.exitcode != 0:
                raise BenchError(f"child {p.name} exited with code {p.exitcode}")
    finally:
        kill_all(procs)


def start_all(procs):
    """Start processes; if one fails to start, kill those already started."""
    try:
        for p in procs:
            p.start()
    except BaseException:
        kill_all(procs)
        raise


def run_children(procs):
    """Start procs and wait for all of them to finish successfully."""
    start_all(procs)
    join_all(procs)


@contextlib.contextmanager
def running(procs):
    """Start procs for the with-block, then join them (join_all).

    If the block raises, the children are killed at once instead of joined,
    so a failed parent never waits on a child blocked forever.
    """
    start_all(procs)
    try:
        yield
    except BaseException:
        kill_all(procs)
        raise
    join_all(procs)


# Trivial functions run by children and pool workers. They live at module
# level so that the spawn and forkserver start methods can pickle them.


def _noop():
    pass


def _square(x):
    return x * x


# ---------------------------------------------------------------------------
# Locks and Value
# ---------------------------------------------------------------------------


def _value_incr_child(side, v, n, barrier, times):
    pin(side)
    lock = v.get_lock()
    # Warm-up: take the lock and read, without changing the value.
    for _ in range(WARMUP):
        with lock:
            _ = v.value
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(n):
        with lock:
            v.value += 1
    t1 = time.perf_counter()
    times[2 * side] = t0
    times[2 * side + 1] = t1


def bench_value_lock_incr(ctx, n, args):
    """2 processes x n increments of a Value('q') under its lock; total ops/s."""
    v = ctx.Value("q", 0)
    barrier = ctx.Barrier(2)
    times = ctx.Array("d", 4, lock=False)
    procs = [
        ctx.Process(target=_value_incr_child, args=(side, v, n, barrier, times), name=f"incr{side}")
        for side in (0, 1)
    ]
    run_children(procs)
    if v.value != 2 * n:
        raise BenchError(f"value_lock_incr: final value {v.value}, expected {2 * n}")
    elapsed = max(times[1], times[3]) - min(times[0], times[2])
    emit("value_lock_incr", 2 * n / elapsed, "ops/s")


def bench_lock_uncontended(ctx, n, args):
    """ns per acquire+release of an uncontended multiprocessing.Lock."""
    lock = ctx.Lock()
    acquire, release = lock.acquire, lock.release
    for _ in range(WARMUP):
        acquire()
        release()
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    t1 = time.perf_counter()
    emit("lock_uncontended", (t1 - t0) / n * 1e9, "ns")


# ---------------------------------------------------------------------------
# objects_create (issue 19)
# ---------------------------------------------------------------------------


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _objects_child(kind, n, conn):
    from multiprocessing import sharedctypes

    make = {"Value": multiprocessing.Value, "RawValue": sharedctypes.RawValue}[kind]
    rss0, t0 = _rss_bytes(), time.perf_counter()
    held = [make("q", i) for i in range(n)]
    t1 = time.perf_counter()
    conn.send((n / (t1 - t0), (_rss_bytes() - rss0) / n))
    del held


def bench_objects_create(ctx, n, args):
    """Values created per second and RSS bytes per Value (all kept alive), for mp.Value
    (a lock, i.e. a semaphore, per value) and mp.RawValue (the arena heap), each in a fresh
    child. mp.Value's count is capped (one semaphore mapping each)."""
    for kind, count in (("Value", min(n, 10_000)), ("RawValue", n)):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_objects_child, args=(kind, count, child))
        p.start()
        if not parent.poll(JOIN_TIMEOUT):
            kill_all([p])
            raise BenchError(f"objects_create {kind}: child gave no result")
        rate, per = parent.recv()
        p.join(JOIN_TIMEOUT)
        emit("objects_create", rate, "objs/s", system=f"{SYSTEM}-{kind}")
        emit("objects_create", per, "B/obj", system=f"{SYSTEM}-{kind}")


# ---------------------------------------------------------------------------
# Event
# ---------------------------------------------------------------------------


def _event_pong(e1, e2, rounds):
    pin(1)
    for _ in range(rounds):
        e1.wait()
        e1.clear()
        e2.set()


def bench_event_pingpong(ctx, n, args):
    """Two processes alternate on two Events; us per round trip (with percentiles).

    A (the parent) sets e1 and waits e2; B (the child) waits e1, clears it and
    sets e2; A clears e2 and starts over. e1 is cleared before e2 is set and
    e2 before the next e1.set(), so no wake-up is lost.
    """
    e1, e2 = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_event_pong, args=(e1, e2, WARMUP + n), name="pong")
    clock = time.perf_counter_ns
    samples = []
    with pinned_parent(), running([child]):
        for i in range(WARMUP + n):
            if i == WARMUP:
                t0 = prev = clock()
            e1.set()
            if not e2.wait(JOIN_TIMEOUT):
                raise BenchError("event_pingpong: child stopped answering")
            e2.clear()
            if i >= WARMUP:
                now = clock()
                samples.append(now - prev)
                prev = now
    emit_rtt("event_pingpong", samples, prev - t0)


# ---------------------------------------------------------------------------
# Pipe
# ---------------------------------------------------------------------------


def _pipe_echo(conn):
    pin(1)
    while True:
        x = conn.recv()
        if x is None:
            break
        conn.send(x)


def bench_pipe_rtt_small(ctx, n, args):
    """Pipe round trip of a small int between two processes; us per round trip (with percentiles)."""
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_pipe_echo, args=(child_end,), name="echo")
    clock = time.perf_counter_ns
    samples = []
    with pinned_parent(), running([child]):
        send, recv = parent_end.send, parent_end.recv
        for i in range(WARMUP + n):
            if i == WARMUP:
                t0 = prev = clock()
            send(i)
            if recv() != i:
                raise BenchError("pipe_rtt_small: echo mismatch")
            if i >= WARMUP:
                now = clock()
                samples.append(now - prev)
                prev = now
        send(None)
    emit_rtt("pipe_rtt_small", samples, prev - t0)


def _pipe_sender(conn, size, count):
    pin(1)
    payload = b"x" * size
    send_bytes = conn.send_bytes
    for _ in range(count):
        send_bytes(payload)
    conn.close()


def _pipe_stream(ctx, workload, size, n):
    """One-way send_bytes of `size` bytes, child -> parent; msgs/s and MB/s."""
    # duplex=False: the one-way Pipe (an os.pipe), as a streaming user would pick.
    recv_end, send_end = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_pipe_sender, args=(send_end, size, WARMUP + n), name="sender")
    with pinned_parent(), running([child]):
        send_end.close()  # the child holds its own copy
        recv_bytes = recv_end.recv_bytes
        for _ in range(WARMUP):
            recv_bytes()
        t0 = time.perf_counter()
        for _ in range(n - 1):
            recv_bytes()
        last = recv_bytes()
        t1 = time.perf_counter()
        if len(last) != size:
            raise BenchError(f"{workload}: got {len(last)} bytes, expected {size}")
    elapsed = t1 - t0
    emit(workload, n / elapsed, "msgs/s")
    emit(workload, n * size / elapsed / 1e6, "MB/s")


def bench_pipe_stream_8B(ctx, n, args):
    _pipe_stream(ctx, "pipe_stream_8B", 8, n)


def bench_pipe_stream_64B(ctx, n, args):
    _pipe_stream(ctx, "pipe_stream_64B", 64, n)


def bench_pipe_stream_4KiB(ctx, n, args):
    _pipe_stream(ctx, "pipe_stream_4KiB", 4096, n)


def bench_pipe_stream_64KiB(ctx, n, args):
    _pipe_stream(ctx, "pipe_stream_64KiB", 65536, n)


# ---------------------------------------------------------------------------
# Queue
# ---------------------------------------------------------------------------


def _queue_producer(side, q, count, barrier, times, slot):
    if side is not None:
        pin(side)
    q.put(-1)  # warm-up: starts the queue's feeder thread
    barrier.wait()
    times[slot] = time.perf_counter()
    put = q.put
    for i in range(count):
        put(i)
    put(None)  # one sentinel per producer: stops exactly one consumer


def _queue_consumer(side, q, barrier, times, slot, counts, index):
    if side is not None:
        pin(side)
    q.get()  # warm-up: takes one warm-up item (from any producer)
    barrier.wait()
    times[slot] = time.perf_counter()
    get = q.get
    received = 0
    while get() is not None:
        received += 1
    times[slot + 1] = time.perf_counter()
    counts[index] = received


def _queue_bench(ctx, workload, producers, consumers, n):
    """Queue put/get of small ints; msgs/s over the whole timed phase.

    n messages in total, split among the producers. The timed phase runs
    from the first process leaving the barrier to the last consumer seeing
    its sentinel.
    """
    assert producers == consumers, "one sentinel per producer must stop one consumer"
    q = ctx.Queue()
    barrier = ctx.Barrier(producers + consumers)
    # Slots: one start stamp per producer, then start+end per consumer.
    times = ctx.Array("d", producers + 2 * consumers, lock=False)
    counts = ctx.Array("q", consumers, lock=False)
    two_sides = producers == 1 and consumers == 1
    procs = []
    for i in range(producers):
        share = n // producers + (1 if i < n % producers else 0)
        procs.append(
            ctx.Process(
                target=_queue_producer,
                args=(0 if two_sides else None, q, share, barrier, times, i),
                name=f"producer{i}",
            )
        )
    for j in range(consumers):
        procs.append(
            ctx.Process(
                target=_queue_consumer,
                args=(1 if two_sides else None, q, barrier, times, producers + 2 * j, counts, j),
                name=f"consumer{j}",
            )
        )
    run_children(procs)
    if sum(counts) != n:
        raise BenchError(f"{workload}: consumers got {sum(counts)} messages, expected {n}")
    starts = [times[i] for i in range(producers)] + [
        times[producers + 2 * j] for j in range(consumers)
    ]
    ends = [times[producers + 2 * j + 1] for j in range(consumers)]
    emit(workload, n / (max(ends) - min(starts)), "msgs/s")


def bench_queue_spsc_small(ctx, n, args):
    _queue_bench(ctx, "queue_spsc_small", 1, 1, n)


def bench_queue_mpmc_2p2c_small(ctx, n, args):
    _queue_bench(ctx, "queue_mpmc_2p2c_small", 2, 2, n)


# ---------------------------------------------------------------------------
# Process start
# ---------------------------------------------------------------------------

# Default and --quick counts per start method (spawn is ~25x slower than fork).
START_COUNTS = {
    "fork": (300, 100),
    "forkserver": (100, 30),
    "spawn": (25, 10),
}


def bench_process_start_join(ctx, n, args):
    """start()+join() of a trivial Process, per start method; procs/s."""
    methods = [args.start_method] if args.start_method else ["fork", "forkserver", "spawn"]
    for method in methods:
        mctx = multiprocessing.get_context(method)
        if args.n is not None:
            count = args.n
        else:
            count = START_COUNTS[method][1 if args.quick else 0]
        # Warm-up: one start (the first forkserver start launches the server).
        run_children([mctx.Process(target=_noop)])
        t0 = time.perf_counter()
        for _ in range(count):
            run_children([mctx.Process(target=_noop)])
        t1 = time.perf_counter()
        emit("process_start_join", count / (t1 - t0), "procs/s", system=f"{SYSTEM}-{method}")


# ---------------------------------------------------------------------------
# Pool
# ---------------------------------------------------------------------------


def _pool_size(args):
    return args.processes or os.cpu_count() or 1


def _with_pool(ctx, args, body):
    """Create a Pool, warm every worker up, run body(pool) and close it."""
    size = _pool_size(args)
    with ctx.Pool(size) as pool:
        pool.map(_square, range(size * 100), chunksize=1)
        result = body(pool)
        pool.close()
        pool.join()
    return result


def bench_pool_map_1M_trivial(ctx, n, args):
    """Pool.map(square, range(n)) with the default chunksize; items/s."""

    def body(pool):
        t0 = time.perf_counter()
        out = pool.map(_square, range(n))
        t1 = time.perf_counter()
        if len(out) != n or out[-1] != (n - 1) ** 2:
            raise BenchError("pool_map_1M_trivial: wrong results")
        return t1 - t0

    elapsed = _with_pool(ctx, args, body)
    emit("pool_map_1M_trivial", n / elapsed, "items/s")


def bench_pool_map_chunk1(ctx, n, args):
    """Pool.map(square, range(n), chunksize=1); items/s."""

    def body(pool):
        t0 = time.perf_counter()
        out = pool.map(_square, range(n), chunksize=1)
        t1 = time.perf_counter()
        if len(out) != n or out[-1] != (n - 1) ** 2:
            raise BenchError("pool_map_chunk1: wrong results")
        return t1 - t0

    elapsed = _with_pool(ctx, args, body)
    emit("pool_map_chunk1", n / elapsed, "items/s")


def bench_pool_apply_async(ctx, n, args):
    """n apply_async(square, (i,)) submitted, then every result got; tasks/s."""

    def body(pool):
        t0 = time.perf_counter()
        pending = [pool.apply_async(_square, (i,)) for i in range(n)]
        total = sum(r.get(JOIN_TIMEOUT) for r in pending)
        t1 = time.perf_counter()
        if total != sum(i * i for i in range(n)):
            raise BenchError("pool_apply_async: wrong results")
        return t1 - t0

    elapsed = _with_pool(ctx, args, body)
    emit("pool_apply_async", n / elapsed, "tasks/s")


def bench_pool_apply_rtt(ctx, n, args):
    """Sequential pool.apply(square, (i,)) round trips; us each."""

    def body(pool):
        apply = pool.apply
        t0 = time.perf_counter()
        for i in range(n):
            if apply(_square, (i,)) != i * i:
                raise BenchError("pool_apply_rtt: wrong result")
        t1 = time.perf_counter()
        return t1 - t0

    elapsed = _with_pool(ctx, args, body)
    emit("pool_apply_rtt", elapsed / n * 1e6, "us")


def _count_primes(n):
    """Primes below n by trial division (the Rust side's count_primes)."""
    count = 0
    for k in range(2, n):
        d = 2
        prime = True
        while d * d <= k:
            if k % d == 0:
                prime = False
                break
            d += 1
        count += prime
    return count


def _pool_map_heavy(ctx, workload, n, args, chunksize):
    """64 equal CPU-bound items (primes below n); items/s."""
    items = [n] * 64

    def body(pool):
        t0 = time.perf_counter()
        out = pool.map(_count_primes, items, chunksize=chunksize)
        t1 = time.perf_counter()
        if len(out) != 64 or len(set(out)) != 1:
            raise BenchError(f"{workload}: wrong results")
        return t1 - t0

    elapsed = _with_pool(ctx, args, body)
    emit(workload, 64 / elapsed, "items/s")


def bench_pool_map_heavy(ctx, n, args):
    _pool_map_heavy(ctx, "pool_map_heavy", n, args, None)


def bench_pool_map_heavy_chunk1(ctx, n, args):
    _pool_map_heavy(ctx, "pool_map_heavy_chunk1", n, args, 1)


# ---------------------------------------------------------------------------
# Manager dict
# ---------------------------------------------------------------------------


def _dict_worker(d, lock, key, n, barrier, times, index):
    # Warm-up: a few locked reads through the proxy (opens its connection).
    for _ in range(10):
        with lock:
            _ = d[key]
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(n):
        with lock:
            d[key] = d[key] - 1
    t1 = time.perf_counter()
    times[2 * index] = t0
    times[2 * index + 1] = t1


def bench_dict_update(ctx, n, args):
    """P processes x n locked read-modify-writes of one Manager().dict() key; ops/s."""
    procs_count = args.processes or 2
    total = procs_count * n
    key = "counter"
    with ctx.Manager() as manager:
        d = manager.dict()
        d[key] = total
        lock = ctx.Lock()
        barrier = ctx.Barrier(procs_count)
        times = ctx.Array("d", 2 * procs_count, lock=False)
        procs = [
            ctx.Process(
                target=_dict_worker,
                args=(d, lock, key, n, barrier, times, i),
                name=f"dict{i}",
            )
            for i in range(procs_count)
        ]
        run_children(procs)
        final = d[key]
    if final != 0:
        raise BenchError(f"dict_update: final value {final}, expected 0")
    elapsed = max(times[1::2]) - min(times[0::2])
    emit("dict_update", total / elapsed, "ops/s")


# ---------------------------------------------------------------------------
# Remote (issue 17): BaseManager serving queue.Queue over TCP, the standard
# library's remote multiprocessing, vs multiproc-redis
# ---------------------------------------------------------------------------

import queue as _queue_mod
from multiprocessing.managers import BaseManager

_REMOTE_QUEUES = {}


def _named_queue(name):
    q = _REMOTE_QUEUES.get(name)
    if q is None:
        q = _REMOTE_QUEUES[name] = _queue_mod.Queue()
    return q


def _task_queue():
    return _named_queue("task")


def _result_queue():
    return _named_queue("result")


class _QueueManager(BaseManager):
    pass


_QueueManager.register("get_task_queue", callable=_task_queue)
_QueueManager.register("get_result_queue", callable=_result_queue)

_AUTHKEY = b"mp-bench"


def _bm_square_worker(address):
    m = _QueueManager(address=address, authkey=_AUTHKEY)
    m.connect()
    task, result = m.get_task_queue(), m.get_result_queue()
    while True:
        x = task.get()
        if x is None:
            return
        result.put(x * x)


def _bm_consumer(address):
    m = _QueueManager(address=address, authkey=_AUTHKEY)
    m.connect()
    task, result = m.get_task_queue(), m.get_result_queue()
    count = 0
    while True:
        x = task.get()
        if x is None:
            result.put(count)
            return
        count += 1


def _with_manager(ctx, body):
    m = _QueueManager(address=("127.0.0.1", 0), authkey=_AUTHKEY, ctx=ctx)
    m.start()
    try:
        return body(m)
    finally:
        m.shutdown()


def bench_remote_apply_async(ctx, n, args):
    """Master puts n ints on the manager's task queue, 2 workers square them, master gets n."""
    workers = args.processes or 2

    def body(m):
        task, result = m.get_task_queue(), m.get_result_queue()
        procs = [ctx.Process(target=_bm_square_worker, args=(m.address,)) for _ in range(workers)]
        with running(procs):
            for i in range(200):
                task.put(i)
            for i in range(200):
                result.get(timeout=JOIN_TIMEOUT)
            t0 = time.perf_counter()
            for i in range(n):
                task.put(i)
            total = 0
            for i in range(n):
                total += result.get(timeout=JOIN_TIMEOUT)
            elapsed = time.perf_counter() - t0
            for _ in procs:
                task.put(None)
        if total != sum(i * i for i in range(n)):
            raise BenchError("remote_apply_async: wrong results")
        return elapsed

    elapsed = _with_manager(ctx, body)
    emit("remote_apply_async", n / elapsed, "tasks/s", system="python-basemanager")


def bench_remote_queue_stream(ctx, n, args):
    """Master puts n 64-byte messages on the manager's queue, 2 consumer processes get them."""
    consumers = args.processes or 2
    payload = b"x" * 64

    def body(m):
        task, result = m.get_task_queue(), m.get_result_queue()
        procs = [ctx.Process(target=_bm_consumer, args=(m.address,)) for _ in range(consumers)]
        with running(procs):
            t0 = time.perf_counter()
            for _ in range(n):
                task.put(payload)
            for _ in procs:
                task.put(None)
            got = sum(result.get(timeout=JOIN_TIMEOUT) for _ in procs)
            elapsed = time.perf_counter() - t0
        if got != n:
            raise BenchError(f"remote_queue_stream: {got} of {n} messages")
        return elapsed

    elapsed = _with_manager(ctx, body)
    emit("remote_queue_stream", n / elapsed, "msgs/s", system="python-basemanager")


# ---------------------------------------------------------------------------
# Registry and command line
# ---------------------------------------------------------------------------

# name -> (function, default n, --quick n). Defaults aim at ~1-3 s and quick
# at well under 5 s on a slow 2-core VM. process_start_join's counts are per
# start method (START_COUNTS); its n column is unused.
WORKLOADS = {
    "value_lock_incr": (bench_value_lock_incr, 200_000, 50_000),
    "lock_uncontended": (bench_lock_uncontended, 5_000_000, 500_000),
    "objects_create": (bench_objects_create, 100_000, 20_000),
    "event_pingpong": (bench_event_pingpong, 20_000, 5_000),
    "pipe_rtt_small": (bench_pipe_rtt_small, 50_000, 10_000),
    "pipe_stream_8B": (bench_pipe_stream_8B, 300_000, 50_000),
    "pipe_stream_64B": (bench_pipe_stream_64B, 300_000, 50_000),
    "pipe_stream_4KiB": (bench_pipe_stream_4KiB, 200_000, 40_000),
    "pipe_stream_64KiB": (bench_pipe_stream_64KiB, 50_000, 10_000),
    "queue_spsc_small": (bench_queue_spsc_small, 200_000, 50_000),
    "queue_mpmc_2p2c_small": (bench_queue_mpmc_2p2c_small, 200_000, 40_000),
    "process_start_join": (bench_process_start_join, None, None),
    "pool_map_1M_trivial": (bench_pool_map_1M_trivial, 1_000_000, 200_000),
    "pool_map_chunk1": (bench_pool_map_chunk1, 50_000, 10_000),
    "pool_apply_async": (bench_pool_apply_async, 50_000, 10_000),
    "pool_apply_rtt": (bench_pool_apply_rtt, 10_000, 2_000),
    "pool_map_heavy": (bench_pool_map_heavy, 300_000, 20_000),
    "pool_map_heavy_chunk1": (bench_pool_map_heavy_chunk1, 300_000, 20_000),
    "dict_update": (bench_dict_update, 10_000, 2_000),
    "remote_apply_async": (bench_remote_apply_async, 20_000, 4_000),
    "remote_queue_stream": (bench_remote_queue_stream, 50_000, 10_000),
}

START_METHODS = ("fork", "spawn", "forkserver")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="mp_bench.py",
        description="Python multiprocessing side of the multiproc comparison benchmark. "
        "Prints one JSON object per line. 'list' prints the workload names.",
    )
    parser.add_argument("workload", help="a workload name, or 'list'")
    parser.add_argument("--n", type=int, help="iteration count (overrides the default)")
    parser.add_argument(
        "--start-method",
        choices=START_METHODS,
        help="multiprocessing context; for process_start_join, the method measured "
        "(default: all three)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        help="pool size for pool_* (default os.cpu_count()), workers for dict_update (default 2)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts (a few seconds each)")
    args = parser.parse_args(argv)
    if args.n is not None and args.n < 1:
        parser.error("--n must be at least 1")
    if args.processes is not None and args.processes < 1:
        parser.error("--processes must be at least 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.workload == "list":
        for name in WORKLOADS:
            print(name)
        return 0
    if args.workload not in WORKLOADS:
        print(
            f"mp_bench.py: unknown workload {args.workload!r}; "
            f"known: {', '.join(WORKLOADS)} (or 'list')",
            file=sys.stderr,
        )
        return 2
    func, default_n, quick_n = WORKLOADS[args.workload]
    n = args.n if args.n is not None else (quick_n if args.quick else default_n)
    ctx = multiprocessing.get_context(args.start_method)
    try:
        func(ctx, n, args)
    except BenchError as e:
        print(f"mp_bench.py: {args.workload} failed: {e}", file=sys.stderr)
        return 1
    return 0


# The guard matters: spawn and forkserver children import this file as a module.
if __name__ == "__main__":
    sys.exit(main())
