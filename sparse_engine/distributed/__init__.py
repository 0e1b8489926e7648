"""Training across processes with ``torch.distributed`` (NCCL on GPUs, gloo on CPUs):

* :mod:`.data_parallel`: every rank holds the whole model and a share of the batch (DDP, the
  topology kept in sync across ranks);
* :mod:`.sharding`: every rank holds a share of each sparse layer's rows, for a model larger
  than one card (model parallelism, :func:`shard_rows`); :mod:`.exchange` how the ranks trade
  tensors, :mod:`.checkpoint` checkpoints for any world size, :mod:`.scale` how large and how fast.

See docs/distributed.md.
"""
from .data_parallel import (DistributedDataParallel, all_gather_columns, all_reduce_sum,  # noqa: F401
                            broadcast_topology, check_topology_in_sync, gather_batch_sizes, is_distributed, rewrap,
                            topology_fingerprint)
from .checkpoint import full_optimizer_state_dict, full_state_dict, load_full_optimizer_state_dict  # noqa: F401
from .exchange import Shard, shard_ranges  # noqa: F401
from .launch import end_process_group, init_from_env  # noqa: F401
from .sharding import shard_rows  # noqa: F401

__all__ = ["DistributedDataParallel", "rewrap", "topology_fingerprint", "check_topology_in_sync",
           "broadcast_topology", "all_gather_columns", "all_reduce_sum", "gather_batch_sizes", "is_distributed",
           "shard_rows", "shard_ranges", "Shard", "full_state_dict", "full_optimizer_state_dict",
           "load_full_optimizer_state_dict", "init_from_env", "end_process_group"]
