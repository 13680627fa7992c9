"""lockstep's collectives as a torch.distributed backend.

Importing this module registers the backend name "lockstep"; then a PyTorch program changes
one word to use it::

    import lockstep_torch  # noqa: F401
    import torch.distributed as dist
    dist.init_process_group("lockstep")  # env:// (torchrun, lockstep run), tcp://, or store=

Collectives on contiguous CPU tensors run in place over lockstep's shared memory (one host)
or tcp (several hosts); other tensors go through a staging copy. CUDA tensors run on
lockstep's nccl backend, in place on the GPU (one GPU per process). A dead peer or a timeout
raises RuntimeError naming the rank and the operation.
"""

import atexit
import datetime
import weakref

import torch
import torch.distributed as dist

from . import _C

__all__ = ["BACKEND", "stats", "transport"]

BACKEND = "lockstep"
_TORCH_MAJOR = int(torch.__version__.split(".")[0])


# The groups made here, so that interpreter exit can wait for their completer threads.
_groups = []


def _create(dist_opts, pg_opts=None):
    """The creator torch.distributed calls (extended API: it gets the group's name too)."""
    timeout = dist_opts.timeout
    if not isinstance(timeout, datetime.timedelta):
        timeout = datetime.timedelta(milliseconds=timeout)
    pg = _C.create_process_group(dist_opts.store, dist_opts.group_rank, dist_opts.group_size,
                                 timeout, str(getattr(dist_opts, "group_id", "") or "default"))
    _groups[:] = [r for r in _groups if r() is not None] + [weakref.ref(pg)]
    return pg


@atexit.register
def _quiesce():
    """Before Python finalizes: a completer thread still releasing a Python callback (a
    future's then()) would take the GIL during finalization and abort the process. In 2.x
    the Python object _create returned may be gone while its ProcessGroup keeps the backend
    (the weak reference is dead): the groups torch.distributed still holds are asked too
    (quiesce passes over backends that are not lockstep's)."""
    backends = [r() for r in _groups]
    try:
        pgs = list(dist.distributed_c10d._world.pg_map)
    except Exception:  # noqa: BLE001  (internal API: best effort)
        pgs = []
    for pg in pgs:
        try:
            backends.append(_backend(pg))
        except Exception:  # noqa: BLE001  (no CPU backend in this group)
            pass
    for b in backends:
        if b is not None:
            try:
                _C.quiesce(b, datetime.timedelta(seconds=10))
            except TypeError:  # not a c10d backend of the type _C takes
                pass


def transport(group=None):
    """Which lockstep transport carries `group` (default: the world): 'shm', 'tcp' or 'none'."""
    return _C.transport(_backend(group))


def stats(group=None):
    """Thread hand-offs and shared buckets of `group` (default: the world) so far:
    {'ran_on_waiter': operations lockstep ran on the thread that waited for them,
    'completed_by_completer': Works that the group's completer thread completed (futures asked
    for from Python), 'futures_on_caller': whether DDP's bucket futures are completed by the
    training thread (where lockstep's thread has no spare core, or
    LOCKSTEP_TORCH_FUTURES_ON_CALLER=1), 'share_votes': votes the ranks took on moving an
    all-reduced tensor's storage into shared memory, 'moved_to_shared': storages moved (DDP's
    gradient buckets with gradient_as_bucket_view=True, from their third step)}."""
    return _C.stats(_backend(group))


def _unwrap(pg):
    """What a debug wrapper holds: under TORCH_DISTRIBUTED_DEBUG=DETAIL, PyTorch 2.x wraps a
    plugin's backend in a _ProcessGroupWrapper (which checks each collective's shape with gloo
    first), and 1.13 and 2.x both wrap gloo's."""
    while hasattr(pg, "wrapped_pg"):
        pg = pg.wrapped_pg
    return pg


def _backend(group):
    """The lockstep process group behind `group` (default: the world)."""
    pg = _unwrap(group if group is not None else dist.distributed_c10d._get_default_group())
    if _TORCH_MAJOR >= 2 and hasattr(pg, "_get_backend"):  # a ProcessGroup, not a Backend
        pg = _unwrap(pg._get_backend(torch.device("cpu")))
    return pg


def _register():
    if BACKEND.upper() in dist.Backend._plugins:
        return
    if _TORCH_MAJOR >= 2:
        # 2.x wraps the c10d::Backend this returns in a ProcessGroup for the listed devices;
        # CUDA tensors run on lockstep's nccl backend (one GPU per process).
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
        dist.Backend.register_backend(BACKEND, _create, extended_api=True, devices=devices)
    else:
        dist.Backend.register_backend(BACKEND, _create, extended_api=True)


_register()
