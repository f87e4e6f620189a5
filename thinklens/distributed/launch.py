"""Who this process is in a torchrun launch, the process group, and the few collective steps thinklens needs
(barrier, rank 0's object to all, every rank's object to all, "rank 0 does this while the others wait").

Why so few: the ranks share no tensors, only items. Coordination is a handful of small messages per stage; all the
data goes through the files (:mod:`thinklens.distributed.parts`).
"""
from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from thinklens.errors import ThinklensError

TIMEOUT_ENV = "THINKLENS_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 24 * 3600  # how long a rank may wait at a barrier (others finishing their share, rank 0's report)
_SOLO: contextvars.ContextVar[bool] = contextvars.ContextVar("thinklens_solo", default=False)
_STATE: dict[str, Any] = {"ready": False, "group": None}


@dataclass(frozen=True)
class World:
    """Who this process is in a launch: ``rank`` of ``size`` processes; ``local_rank`` of ``local_size`` on its node.

    >>> w = World(rank=1, size=2)
    >>> [i for i in range(5) if w.owns(i)], w.is_main, w.parallel
    ([1, 3], False, True)
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def owns(self, index: int) -> bool:
        """Whether item ``index`` (0-based, in the stable input order) is this rank's."""
        return index % self.size == self.rank

    def share(self, items: Iterable[Any]) -> list[Any]:
        """This rank's items: every ``size``-th one, starting at ``rank``.

        >>> World(rank=0, size=3).share("abcdefg")
        ['a', 'd', 'g']
        """
        return [x for i, x in enumerate(items) if self.owns(i)]


def launched(environ: dict[str, str] | None = None) -> World:
    """The world torchrun describes in the environment; ``World()`` (one process) outside a launch.

    >>> launched({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    World(rank=3, size=4, local_rank=1, local_size=2)
    >>> launched({})
    World(rank=0, size=1, local_rank=0, local_size=1)
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return World()
    try:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_size = int(env.get("LOCAL_WORLD_SIZE", size))
    except ValueError:
        raise ThinklensError(f"torchrun environment: RANK={env.get('RANK')!r} WORLD_SIZE={env.get('WORLD_SIZE')!r} "
                             f"LOCAL_RANK={env.get('LOCAL_RANK')!r} must be integers") from None
    if not 0 <= rank < size or not 0 <= local_rank < max(local_size, 1):
        raise ThinklensError(f"torchrun environment: RANK={rank} of WORLD_SIZE={size}, LOCAL_RANK={local_rank} of "
                             f"LOCAL_WORLD_SIZE={local_size} are inconsistent")
    return World(rank, size, local_rank, local_size)


def world() -> World:
    """The world the current code shares its items with; creates the process group on first use in a launch.
    Inside :func:`solo` (rank 0 doing the work of all) it is one process.

    >>> world().size  # not launched by torchrun
    1
    """
    if _SOLO.get():
        return World()
    w = launched()
    if w.parallel and not _STATE["ready"]:
        _init(w)
    return w


def _timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(raw) if raw else float(DEFAULT_TIMEOUT_S)
    except ValueError:
        raise ThinklensError(f"{TIMEOUT_ENV}={raw!r}: expected seconds") from None


def _init(w: World) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=_timeout_s())
    if not dist.is_initialized():
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            torch.cuda.set_device(w.local_rank % torch.cuda.device_count())
            dist.init_process_group("nccl", timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
        atexit.register(_shutdown)
    # coordination (barriers, small objects) always over gloo: CPU memory, and NCCL's watchdog never fires while
    # rank 0 writes a report for minutes
    _STATE["group"] = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    _STATE["ready"] = True
    if not w.is_main:
        from thinklens.progress import set_quiet

        set_quiet(True)


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def exit_launch(code: int) -> None:
    """Leave a process that joined a torchrun launch with ``code``: run the exit handlers (they destroy the process
    group), flush, and end without the interpreter's teardown, during which a native gloo thread can abort a process
    that has finished its work (about one launch in twenty with torch 2.13 on the CPU). Returns at once in a
    process that joined no launch.

    >>> exit_launch(0)  # not launched by torchrun: nothing to do
    """
    if not _STATE["ready"]:
        return
    import sys

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in one process).

    >>> barrier()
    """
    if world().parallel:
        import torch.distributed as dist

        dist.barrier(group=_STATE["group"])


def broadcast(obj: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable object; a barrier as well).

    >>> broadcast({"finished": True})
    {'finished': True}
    """
    if not world().parallel:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_STATE["group"])
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process).

    >>> gather(3)
    [3]
    """
    w = world()
    if not w.parallel:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj, group=_STATE["group"])
    return out


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Inside the block this process acts alone: :func:`world` is one process (rank 0 doing a job for all).

    >>> with solo():
    ...     world().parallel
    False
    """
    token = _SOLO.set(True)
    try:
        yield
    finally:
        _SOLO.reset(token)


def on_main(fn: Callable[..., Any], *args: Any, share: bool = True, **kwargs: Any) -> Any:
    """Run ``fn`` on rank 0 alone (as one process, :func:`solo`) while the other ranks wait; every rank returns its
    result (``share=False``: the others get None, for results too big to send). An error on rank 0 stops every rank
    with one line.

    >>> on_main(sum, [1, 2, 3])
    6
    """
    w = world()
    if not w.parallel:
        return fn(*args, **kwargs)
    if w.is_main:
        try:
            with solo():
                result = fn(*args, **kwargs)
        except BaseException as err:
            broadcast(("error", str(err) if isinstance(err, ThinklensError) else f"{type(err).__name__}: {err}"))
            raise
        broadcast(("ok", result if share else None))
        return result
    status, value = broadcast(None)
    if status == "error":
        raise ThinklensError(f"stopped: rank 0 failed: {value}")
    return value


def combine(summary: dict[str, Any], *, total: Iterable[str] = (), longest: Iterable[str] = (),
            joined: Iterable[str] = ()) -> dict[str, Any] | None:
    """Rank 0's ``summary`` with the ``total`` fields summed, the ``longest`` ones maximised and the ``joined``
    lists concatenated over ranks; None on the other ranks (only rank 0 reports a command's result).

    >>> combine({"n": 2, "s": 1.5, "errors": []}, total=["n"], longest=["s"], joined=["errors"])
    {'n': 2, 's': 1.5, 'errors': []}
    """
    parts = gather(summary)
    if not world().is_main:
        return None
    out = dict(summary)
    for k in total:
        out[k] = sum(p[k] for p in parts)
    for k in longest:
        out[k] = max(p[k] for p in parts)
    for k in joined:  # a message every rank has (e.g. a bad line of the shared input) is kept once
        out[k] = list(dict.fromkeys(x for p in parts for x in p[k]))
    if len(parts) > 1:
        out["ranks"] = len(parts)
    return out


# --------------------------------------------------------------------------------------------------------- devices
def local_device(device: str | None) -> str | None:
    """This rank's device: plain ``cuda`` becomes ``cuda:LOCAL_RANK`` in a torchrun launch (one GPU per rank);
    anything else is kept.

    >>> local_device("cpu"), local_device(None)
    ('cpu', None)
    """
    w = launched()
    if not w.parallel or device != "cuda":
        return device
    import torch

    n = torch.cuda.device_count()
    if w.local_rank >= n:
        raise ThinklensError(f"rank {w.rank}: LOCAL_RANK {w.local_rank} but only {n} GPU(s) are visible; use "
                             f"--nproc-per-node {n} or fewer")
    return f"cuda:{w.local_rank}"


def gpu_share(n_gpus: int, w: World) -> list[int]:
    """The GPUs of one rank when each rank spreads its copy of the model over several (``--device-map auto`` under
    torchrun): the node's GPUs split into ``LOCAL_WORLD_SIZE`` equal consecutive groups.

    >>> gpu_share(8, World(rank=1, size=2, local_rank=1, local_size=2))
    [4, 5, 6, 7]
    """
    per = n_gpus // max(w.local_size, 1)
    if per < 1:
        raise ThinklensError(f"{w.local_size} ranks per node share {n_gpus} GPU(s): each needs at least one; lower "
                             "--nproc-per-node")
    return list(range(w.local_rank * per, (w.local_rank + 1) * per))


def device_map_kwargs(device_map: Any) -> dict[str, Any]:
    """``from_pretrained`` arguments that keep a rank's ``device_map="auto"`` model on its own GPUs
    (:func:`gpu_share`, through ``max_memory``); nothing outside a launch, for explicit maps, or without CUDA.

    >>> device_map_kwargs("auto")  # not launched by torchrun
    {}
    """
    w = launched()
    if not w.parallel or not isinstance(device_map, str):
        return {}
    import torch

    if not torch.cuda.is_available():
        return {}
    own = gpu_share(torch.cuda.device_count(), w)
    return {"max_memory": {g: torch.cuda.mem_get_info(g)[0] for g in own}}


