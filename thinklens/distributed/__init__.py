"""Data parallel over GPUs and nodes with ``torchrun``: each rank takes a fixed share of the items, writes it to its
own part file, and rank 0 merges the parts into exactly the files one process writes.

Why this shape: every stage that needs a model loops over independent items (problems, traces, pairs), so N copies
of the model each doing 1/N of the items is the whole speed-up, and the launcher users already have (``torchrun
--nproc-per-node N -m thinklens COMMAND ...``) starts, places and supervises the copies. The crash-safe JSONL files
stay the only state, so resuming works as it does for one process:

* a launch is recognised from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``; ``MASTER_ADDR``/``MASTER_PORT`` are read by ``init_process_group``). The process group is
  created on first use: NCCL on CUDA (with a gloo group beside it for the small coordination messages, which then
  never touch GPU memory), gloo on CPU. Each rank takes GPU ``LOCAL_RANK`` (:func:`local_device`);
* item ``i`` of the stable, de-duplicated input order belongs to rank ``i % WORLD_SIZE`` (:meth:`World.owns`), so a
  rerun with the same world size gives every rank the same share;
* rank ``r`` of ``n`` appends its records to ``OUTPUT.rank{r}-of-{n}`` with the crash-safe writer of
  :mod:`thinklens.jsonl`; after a barrier, rank 0 appends the parts' records to ``OUTPUT`` in the input order and
  deletes the parts (:func:`fold_parts`); stages that aggregate (``head_scores.npz``, ``result.npz``) do it on rank 0
  after that merge, while the other ranks wait (:func:`on_main`);
* a killed launch leaves its parts behind: the next run, with any world size (one process included), first folds
  them into ``OUTPUT``, then skips everything ``OUTPUT`` holds. Folding is idempotent (a line already in ``OUTPUT`` is
  not added again), so a kill during the merge itself loses nothing either.

Progress bars and logs come from rank 0 only; warnings about a rank's own items come from that rank.
"""
from thinklens.distributed.launch import (
    DEFAULT_TIMEOUT_S,
    TIMEOUT_ENV,
    World,
    barrier,
    broadcast,
    combine,
    device_map_kwargs,
    exit_launch,
    gather,
    gpu_share,
    launched,
    local_device,
    on_main,
    solo,
    world,
)
from thinklens.distributed.parts import ShardedOutput, fold_parts, part_files, part_path, sharded_files

__all__ = ["DEFAULT_TIMEOUT_S", "TIMEOUT_ENV", "World", "barrier", "broadcast", "combine", "device_map_kwargs",
           "exit_launch", "gather", "gpu_share", "launched", "local_device", "on_main", "solo", "world",
           "ShardedOutput", "fold_parts", "part_files", "part_path", "sharded_files"]
