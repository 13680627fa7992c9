"""Runs one scenario of workers.py as `world` real processes over loopback.

Each worker gets RANK, WORLD_SIZE and an init method; the run is bounded by `timeout` seconds,
after which every worker still alive is killed by its pid. Returns the exit codes and the
outputs, so a test can assert on both (a scenario that fails prints why and exits non-zero).
The run's directory (logs, FileStore) is removed afterwards: a failure's report holds the logs.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = os.path.join(HERE, "workers.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Result:
    def __init__(self, codes, outputs, elapsed):
        self.codes, self.outputs, self.elapsed = codes, outputs, elapsed

    def report(self):
        return "\n".join(f"--- rank {r} exit {c}\n{o}" for r, (c, o) in
                         enumerate(zip(self.codes, self.outputs)))

    def assert_ok(self):
        assert all(c == 0 for c in self.codes), self.report()


def run(scenario, world, init="file", timeout=60, env=None, args=()):
    """init: 'file' (a FileStore passed as store=), 'env' (env://), 'tcp' (tcp://) or 'store'
    (a TCPStore passed as store=)."""
    with tempfile.TemporaryDirectory(prefix="lockstep_torch_", ignore_cleanup_errors=True) as tmp:
        return _run_in(tmp, scenario, world, init, timeout, env, args)


def _run_in(tmp, scenario, world, init, timeout, env, args):
    port = free_port()
    procs, logs = [], []
    t0 = time.monotonic()
    try:
        for rank in range(world):
            e = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                     LOCKSTEP_TEST_INIT=init, LOCKSTEP_TEST_DIR=tmp,
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
            e.update(env or {})
            log = open(os.path.join(tmp, f"rank{rank}.log"), "w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, WORKERS, scenario, *map(str, args)],
                                          env=e, stdout=log, stderr=subprocess.STDOUT))
        deadline = t0 + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
    finally:
        for p in procs:  # our own workers only, by pid
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
    elapsed = time.monotonic() - t0
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    return Result([p.returncode for p in procs], outputs, elapsed)
