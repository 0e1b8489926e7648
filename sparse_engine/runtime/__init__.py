"""The process around the kernels: OpenMP threads, how idle threads wait, huge pages and freed
memory (:mod:`.threads`, imported by ``import sparse_engine`` before torch loads), small recurrences
on one thread forward and backward (:mod:`.one_thread`), and how time and peak memory are measured
(:mod:`.timing`), and how the CUDA allocator gets its memory (:mod:`.cuda_allocator`). Nothing here
imports torch."""
