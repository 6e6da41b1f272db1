"""Every way a Python program starts processes, each checked and reported on the console."""

import concurrent.futures
import multiprocessing
import os
import subprocess
import sys


def square(n):
    return n * n


def fork_pool():
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return pool.map(square, range(6))


def spawn_pool():
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        return pool.map(square, range(4))


def process_pool():
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as ex:
        return sorted(ex.map(square, range(5)))


def queue_and_lock():
    ctx = multiprocessing.get_context("fork")
    q, lock = ctx.Queue(), ctx.Lock()
    p = ctx.Process(target=_put, args=(q, lock))
    p.start()
    got = q.get(timeout=30)
    p.join(30)
    return [got, p.exitcode]


def _put(q, lock):
    with lock:
        q.put(os.getpid() != 1)


def child_interpreter():
    out = subprocess.run([sys.executable, "-c", "import sys; print(sys.version_info[0] * 7)"],
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def plain_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main():
    for check in (fork_pool, spawn_pool, process_pool, queue_and_lock, child_interpreter,
                  plain_fork):
        print(f"workers: {check.__name__} = {check()!r}", flush=True)
    return 0
