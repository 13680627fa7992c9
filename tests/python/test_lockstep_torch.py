"""lockstep_torch against gloo, with real processes over loopback (harness.py). Each test is
bounded; the workers check results themselves and exit non-zero with the reason."""

import os
import re
import subprocess

import pytest
import torch

import harness

# One init method per world size, so every one is exercised: store=FileStore, env://,
# tcp://, store=TCPStore.
INITS = {1: "file", 2: "env", 3: "tcp", 4: "store"}


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_collectives_match_gloo(world):
    r = harness.run("collectives", world, init=INITS[world], timeout=120)
    r.assert_ok()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (GPU machine)")
@pytest.mark.parametrize("engine", ["1", "0"])
def test_cuda_tensors_match_the_cpu_group_on_lockstep_nccl(engine):
    # One rank: NCCL takes one process per GPU. The single-rank engine ("1") runs it through
    # NCCL; without it ("0") the group answers locally (device copies after the writer's event).
    r = harness.run("cuda", 1, init="file", timeout=180,
                    env={"LOCKSTEP_NCCL_SINGLE_RANK_ENGINE": engine})
    r.assert_ok()


def test_futures_complete_in_issue_order():
    harness.run("order", 2, init="env", timeout=60).assert_ok()


@pytest.mark.parametrize("spare", [0, 1])
def test_sync_waits_and_bucket_futures_run_where_lockstep_has_a_core(spare):
    harness.run("handoffs", 2, init="env", timeout=60, args=[spare],
                env={"LOCKSTEP_SPARE_CORE": str(spare)}).assert_ok()


def test_ddp_bitwise_equal_to_gloo_with_two_ranks():
    harness.run("ddp", 2, init="env", timeout=90, args=[5]).assert_ok()


def test_ddp_gradients_within_reordering_bound_with_three_ranks():
    harness.run("ddp", 3, init="tcp", timeout=90, args=[1]).assert_ok()


@pytest.mark.parametrize("world", [2, 3])
def test_all_reduced_buffers_move_into_shared_memory(world):
    harness.run("share", world, init="env", timeout=90).assert_ok()


def test_share_buffers_off_on_one_rank_is_off_on_every_rank():
    harness.run("share_off", 2, init="env", timeout=60, args=[1]).assert_ok()


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_killed_rank_is_named_by_the_others(transport):
    timeout_s = 10
    r = harness.run("kill", 3, init="env", timeout=60, args=[1],
                    env={"LOCKSTEP_TRANSPORT": transport, "LOCKSTEP_TEST_TIMEOUT": str(timeout_s)})
    assert r.codes[1] == -9, r.report()
    for rank in (0, 2):
        assert r.codes[rank] == 3, r.report()
        m = re.search(r"raised after ([0-9.]+) s: (.*)", r.outputs[rank])
        assert m, r.report()
        # Within the group's timeout (plus slack for a loaded machine): the error, not a hang.
        assert float(m.group(1)) < timeout_s + 15, r.report()
        assert "rank 1" in m.group(2), r.report()
        assert "allreduce" in m.group(2), r.report()


def test_mismatched_collectives_raise_under_debug_mode():
    r = harness.run("mismatch", 2, init="env", timeout=60, env={"LOCKSTEP_DEBUG": "detail"})
    assert r.codes == [3, 3], r.report()
    assert all("allreduce" in o and "broadcast" in o for o in r.outputs), r.report()


@pytest.mark.skipif("LOCKSTEP_BIN" not in os.environ, reason="needs LOCKSTEP_BIN (CTest sets it)")
def test_lockstep_run_hosts_a_torchrun_script_and_restarts_it():
    script = os.path.join(harness.HERE, "torchrun_script.py")
    cmd = [os.environ["LOCKSTEP_BIN"], "run", "--nproc-per-node", "2", "--max-restarts", "1",
           script]  # positional, as with torchrun
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "restarting all workers" in out, out
    for rank in (0, 1):
        assert f"rank {rank} restart 1 of 1: ok, sum 6.0" in out, out
