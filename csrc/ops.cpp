// Operator schemas of sparse_engine: every torch.ops.sparse_engine.* operator is defined here,
// grouped by op family. The kernels register implementations per dispatch key
// (TORCH_LIBRARY_IMPL) in one file per family and device, named after the family:
//
//   family     ops                                   CPU (cpu/)         CUDA kernels + torch glue (cuda/)
//   spmm       spmm, spmm_t                          spmm_cpu.cpp       spmm_cuda.cu      + spmm_glue.cpp
//   sddmm      sddmm                                 sddmm_cpu.cpp      sddmm_cuda.cu     + sddmm_glue.cpp
//   transpose  transpose_index                       transpose_cpu.cpp  transpose_cuda.cu + transpose_glue.cpp
//   rnn_step   {lstm,gru,rnn,ctrnn}_step(_backward)  rnn_step_cpu.cpp   rnn_step_cuda.cu  + rnn_step_glue.cpp
//   rnn_sequence  rnn_sequence(_backward)         rnn_sequence_cpu.cpp  rnn_sequence_cuda.cu + rnn_sequence_glue.cpp
//   topology   select_smallest ... rewire            topology_cpu.cpp   none: torch primitives in
//                                                                       sparse_engine/kernels/topology_cuda.py
//   densify    pattern_bits ... gather_csr           densify_cpu.cpp    scatter_csr/gather_csr: torch primitives
//                                                                       in sparse_engine/kernels/densify_torch.py
//   dense_rnn  gru_sequence(_backward)               dense_rnn_cpu.cpp  none (CPU only; on CUDA the dense
//                                                                       path runs torch's GRU)
//   analysis   signed_triad_census, ...              analysis_cpu.cpp   none (CPU only)
//   mlp        relu_dropout, sgd_step                mlp_cpu.cpp        none (CPU only; CUDA uses torch ops)
//
// Shared by the families: csrc/checks.h (argument checks, one message each, CPU and CUDA),
// csrc/index_check.h (the content check of an index, once per pattern, CPU and CUDA),
// csrc/constants.h (the parallel-work threshold, cell modes, gate layouts: the mirror of
// sparse_engine/kernels/constants.py), csrc/rnn_step_ops.h (the eight step ops written once over a
// device), cpu/common.h, cpu/storage.h, cuda/common.cuh, cuda/glue.h and cuda/launchers.h (the
// CUDA kernels' host entry points). csrc/autograd.cpp registers the autograd formulas of spmm,
// spmm_t and sddmm; the Python side, sparse_engine/kernels/library.py, registers the ops' fake
// (meta) kernels, the autocast rules and the CUDA topology kernels written in Python.
//
// Every sparse operand is passed as its full index: CSR (row_ptr int64 [rows+1],
// col_idx int32 [nnz]) and the transposed index (csc_ptr int64 [cols+1], csc_row int32
// [nnz], csc_perm int32 [nnz], a permutation of CSR positions into column order), then
// the values [nnz]. Activations are feature-major: (features x batch).
#include <Python.h>
#include <torch/library.h>

#include <dlfcn.h>
#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cpu/common.h"
#include "cpu/gather.h"
#include "index_check.h"

// The index of a sparse operand, as the schemas below spell it.
#define SE_INDEX_SCHEMA "Tensor row_ptr, Tensor col_idx, Tensor csc_ptr, Tensor csc_row, Tensor csc_perm, "

TORCH_LIBRARY(sparse_engine, m) {
  // ---------------------------------------------------------------- spmm
  // Y = W X: X (cols x B) -> (rows x B)
  m.def("spmm(" SE_INDEX_SCHEMA "Tensor values, Tensor X) -> Tensor");
  // W^T G: G (rows x B) -> (cols x B); uses the transposed index, no atomics. values_t, when
  // given, is values[csc_perm] (the values in column order, made once by the caller for many
  // products; see csrc/values_t.h): the product reads it directly instead of through csc_perm.
  m.def("spmm_t(" SE_INDEX_SCHEMA "Tensor values, Tensor G, Tensor? values_t=None) -> Tensor");

  // ---------------------------------------------------------------- sddmm
  // out[k] = sum_b G[row_k, b] * X[col_k, b]: the weight gradient sampled at the nonzeros
  m.def("sddmm(" SE_INDEX_SCHEMA "Tensor G, Tensor X) -> Tensor");

  // ---------------------------------------------------------------- transpose
  // Transposed index of a CSR pattern: (csc_ptr, csc_row, csc_perm), O(nnz + cols)
  m.def("transpose_index(Tensor row_ptr, Tensor col_idx, int n_cols) -> (Tensor, Tensor, Tensor)");

  // ---------------------------------------------------------------- rnn_step
  // One recurrent step: W_hh h (+ gx) and the gate math fused; see cpu/rnn_step_cpu.cpp's header.
  // Each backward takes W_hh's values_t (values[csc_perm], csrc/values_t.h) optionally: a
  // recurrence makes it once per sequence for its T backward steps; and optionally, last, the
  // step's input state h_in (H x B, what W_hh multiplied) with dw_t (nnz, in the transposed
  // index's order), to which it adds W_hh's gradient of the step, dG h_in^T at the nonzeros (the
  // CPU in the same pass as W_hh^T dG: each gathered row of dG serves both).
  m.def("lstm_step(" SE_INDEX_SCHEMA "Tensor values, Tensor gx, Tensor h, Tensor c) -> (Tensor, Tensor, Tensor)");
  m.def("lstm_step_backward(" SE_INDEX_SCHEMA "Tensor values, Tensor acts, Tensor c_prev, Tensor c, Tensor dh, "
        "Tensor dc, Tensor? values_t=None, Tensor? h_in=None, Tensor(a!)? dw_t=None) -> (Tensor, Tensor, Tensor)");
  m.def("gru_step(" SE_INDEX_SCHEMA "Tensor values, Tensor gx, Tensor h, Tensor? b_hh) -> (Tensor, Tensor)");
  m.def("gru_step_backward(" SE_INDEX_SCHEMA "Tensor values, Tensor acts, Tensor h_prev, Tensor dh, "
        "Tensor? values_t=None, Tensor? h_in=None, Tensor(a!)? dw_t=None) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("rnn_step(" SE_INDEX_SCHEMA "Tensor values, Tensor gx, Tensor h, bool relu) -> Tensor");
  m.def("rnn_step_backward(" SE_INDEX_SCHEMA "Tensor values, Tensor h_new, Tensor dh, bool relu, "
        "Tensor? values_t=None, Tensor? h_in=None, Tensor(a!)? dw_t=None) -> (Tensor, Tensor)");
  m.def("ctrnn_step(" SE_INDEX_SCHEMA "Tensor values, Tensor gx, Tensor h, float dt, float tau) -> (Tensor, Tensor)");
  m.def("ctrnn_step_backward(" SE_INDEX_SCHEMA "Tensor values, Tensor acts, Tensor dh, float dt, float tau, "
        "Tensor? values_t=None, Tensor? h_in=None, Tensor(a!)? dw_t=None) -> (Tensor, Tensor)");

  // ---------------------------------------------------------------- rnn_sequence
  // A layer-direction's whole sequence (LSTM, GRU, RNN_TANH, RNN_RELU: `mode`), forward and backward,
  // in one op: on CUDA one persistent cooperative launch each way, on the CPU the step ops in a loop
  // (the contract). Arguments and shapes: csrc/rnn_sequence_ops.h. Forward: from gx (G*H, T, B),
  // every step's input part with its biases, and h0 (c0: LSTM; b_hh: GRU's hidden bias, optional):
  // (y (T, H, B) in time order, LSTM's cs (T, H, B), the saved activations (T, 4H, B): LSTM, GRU).
  m.def("rnn_sequence(" SE_INDEX_SCHEMA "Tensor values, str mode, Tensor gx, Tensor h0, Tensor? c0, "
        "Tensor? b_hh, bool reverse) -> (Tensor, Tensor, Tensor)");
  // Backward: from the forward's outputs, dy (T, H, B; None: the outputs took no gradient) and dh_T
  // (dc_T): (dG (G*H, T, B), the hidden-side gate gradients, GRU's input-side dgx (3H, T, B), dh_0,
  // LSTM's dc_0); W_hh's gradient is dG against the states (sddmm over T*B columns, the caller's).
  m.def("rnn_sequence_backward(" SE_INDEX_SCHEMA "Tensor values, str mode, Tensor y, Tensor h0, Tensor? c0, "
        "Tensor? cs, Tensor? acts, Tensor? dy, Tensor dh, Tensor? dc, bool reverse, Tensor? values_t=None) "
        "-> (Tensor, Tensor, Tensor, Tensor)");

  // ---------------------------------------------------------------- topology
  // bool mask of the k smallest scores (ties: lower index first)
  m.def("select_smallest(Tensor scores, int k) -> Tensor");
  // SET keep mask: drops round(zeta*P) positives and round(zeta*N) negatives nearest zero, and zeros
  m.def("set_prune(Tensor values, float zeta) -> Tensor");
  // CSR without the entries where keep is False; kept_pos = their old positions
  m.def("compact(Tensor row_ptr, Tensor col_idx, Tensor values, Tensor keep) -> (Tensor, Tensor, Tensor, Tensor)");
  // n distinct uniformly random empty positions (rows int64, cols int32), sorted
  m.def("random_empty(Tensor row_ptr, Tensor col_idx, int n_cols, int n, int seed) -> (Tensor, Tensor)");
  // inserts new entries at empty positions: (row_ptr, col_idx, values, old_pos, new_pos)
  m.def("merge(Tensor row_ptr, Tensor col_idx, Tensor values, int n_cols, Tensor new_row, Tensor new_col, "
        "Tensor new_values) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // origin[p]: old position of the entry now at p, -1 for new entries
  m.def("remap_index(Tensor kept_pos, Tensor old_pos, int new_nnz) -> Tensor");
  // out[p] = t[origin[p]] (zero where origin[p] < 0)
  m.def("gather_or_zero(Tensor t, Tensor origin) -> Tensor");
  // out[j] = dot(G[rows[j]], X[cols[j]])
  m.def("coo_dot(Tensor rows, Tensor cols, Tensor G, Tensor X) -> Tensor");
  // top-k |G X^T| at empty positions, tile by tile: (rows int64, cols int32, grads)
  m.def("grad_topk(Tensor row_ptr, Tensor col_idx, Tensor G, Tensor X, int k, int tile_rows, int tile_cols) "
        "-> (Tensor, Tensor, Tensor)");
  // One update of a layer in one call: compact (drop where keep is False) -> grow at empty positions
  // of the compacted pattern: at (grow_row, grow_col) when given, else n_grow by |G X^T| when G and X
  // are given (grad_topk with sample_factor 0, else the best of sample_factor * n_grow random
  // candidates drawn with seed), else n_grow random ones (seed) -> merge (new values 0; keep_regrown:
  // a pruned entry grown again stays as it was) -> carry's per-entry tensors in the new order.
  // Returns (row_ptr, col_idx, values, src, dst, new_pos, new_row, new_col, carried): entry src[j]
  // is now at dst[j]; the new entry at (new_row[j], new_col[j]) is at new_pos[j].
  m.def("rewire(Tensor row_ptr, Tensor col_idx, Tensor values, int n_cols, Tensor keep, Tensor? grow_row, "
        "Tensor? grow_col, Tensor? G, Tensor? X, int n_grow, int seed, int tile_rows, int tile_cols, "
        "int sample_factor, bool keep_regrown, Tensor[] carry) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor[])");

  // ---------------------------------------------------------------- densify
  // The CSR pattern as bits, int16 [rows, ceil(n_cols / 16)]: bit b of word j of row r set iff (r, 16 j + b) is stored
  m.def("pattern_bits(Tensor row_ptr, Tensor col_idx, int n_cols) -> Tensor");
  // dense <- the values at the positions of the pattern's bits and zeros elsewhere (every entry of dense written)
  m.def("expand_bits(Tensor row_ptr, Tensor bits, Tensor values, Tensor(a!) dense) -> ()");
  // out[k] = dense at the k-th stored position of the pattern's bits
  m.def("compress_bits(Tensor row_ptr, Tensor bits, Tensor dense) -> Tensor");
  // whether a and b have the same dtype and shape and hold the same bytes
  m.def("same_bytes(Tensor a, Tensor b) -> bool");
  // dense[r, c] = values[k] for every stored entry k at (r, c); dense's other entries are left as they are
  m.def("scatter_csr(Tensor row_ptr, Tensor col_idx, Tensor values, Tensor(a!) dense) -> ()");
  // out[k] = dense[r, c] for every stored entry k at (r, c)
  m.def("gather_csr(Tensor row_ptr, Tensor col_idx, Tensor dense) -> Tensor");

  // ---------------------------------------------------------------- dense_rnn
  // A GRU layer-direction over a whole sequence with a dense W_hh, time- and batch-major: from
  // gx = x W_ih^T + b_ih (T, B, 3H) and h0 (B, H): y (T, B, H), acts (T, B, 4H) = [r, z, n, W_hn h + b_hn]
  m.def("gru_sequence(Tensor gx, Tensor h0, Tensor w_hh, Tensor? b_hh, bool reverse) -> (Tensor, Tensor)");
  // its backward from dy (T, B, H): (dgx, dh0, dw_hh, db_hh: undefined without a bias)
  m.def("gru_sequence_backward(Tensor dy, Tensor acts, Tensor y, Tensor h0, Tensor w_hh, bool reverse, "
        "bool has_bias) -> (Tensor, Tensor, Tensor, Tensor)");

  // ---------------------------------------------------------------- analysis
  // Signed triad census of the graph "entry (r, c) = edge c -> r": (census int64[16] with
  // census[0] (003) left 0, signed int64[4, 5]: per transitive type 030T, 120D, 120U, 300:
  // balanced and unbalanced semicycles, completely balanced, partially balanced and
  // completely unbalanced triads).
  m.def("signed_triad_census(Tensor row_ptr, Tensor col_idx, Tensor values) -> (Tensor, Tensor)");
  // Transitive semicycles in triads of the types in type_mask: (nodes [S,3], positions [S,3], type [S])
  m.def("transitive_semicycles(Tensor row_ptr, Tensor col_idx, Tensor values, int type_mask) "
        "-> (Tensor, Tensor, Tensor)");
  // K degree-preserving randomisations: new dst arrays [K, m]
  m.def("degree_preserving_swaps(Tensor src, Tensor dst, int n, int n_swaps, Tensor seeds) -> Tensor");

  // ---------------------------------------------------------------- mlp
  // In place: z <- relu(z) * (u >= p) * scale, u uniform from a hash of (seed, element index);
  // scale 1 / (1 - p) by default (inverted dropout), 1 for SET-MLP's faithful mode
  m.def("relu_dropout(Tensor(a!) z, float p, int seed, float? scale=None) -> ()");
  // In place, SGD with the decay outside the momentum (SETSGD):
  // buf <- momentum * buf + grad; param <- param - decay * param - lr * buf
  m.def("sgd_step(Tensor(a!) param, Tensor(b!) buf, Tensor grad, float lr, float momentum, float decay) -> ()");
}

#undef SE_INDEX_SCHEMA

// sparse_engine._C._index_scans(): how many index content scans (csrc/index_check.h) this process
// has run, CPU and CUDA together; the tests read it to see that a remembered index is not scanned again.
static PyObject* index_scans(PyObject*, PyObject*) {
  return PyLong_FromLongLong(sparse_engine::IndexCache::instance().scans());
}

// sparse_engine._C._shorten_openmp_spin(): starts one OpenMP team of 2 threads on a thread of its
// own that sleeps (blocked, never spinning) until _end_openmp_team(), so that libgomp manages one
// thread more than torch's: with torch's threads at the CPU count that is more threads than CPUs,
// where libgomp's idle threads spin for its throttled count (1000 spins, a few microseconds; see
// GOMP_SPINCOUNT in libgomp's manual) instead of its default (300,000: about 4 ms after each
// parallel op, measured on a 2-core VM). For torch's own CPU ops when torch was imported first and
// left libgomp's default waits (sparse_engine/runtime/threads.py, which ends the team at exit: a
// team still asleep then would keep the process from exiting). Returns whether it started one.
namespace {
struct SleepingTeam {
  std::mutex m;
  std::condition_variable cv;
  bool end = false;
  std::thread thread;
  pid_t pid = 0;  // the process that started it: a child made by fork() has no such thread to end
};
SleepingTeam& sleeping_team() {
  static auto* team = new SleepingTeam();  // never destroyed: its thread may outlive static destructors
  return *team;
}
}  // namespace

static PyObject* shorten_openmp_spin(PyObject*, PyObject*) {
  SleepingTeam& t = sleeping_team();
  {
    std::lock_guard<std::mutex> lock(t.m);
    if (t.thread.joinable() || t.end) Py_RETURN_FALSE;
    t.pid = getpid();
    t.thread = std::thread([&t] {
#pragma omp parallel num_threads(2)
      {
        std::unique_lock<std::mutex> lock(t.m);
        t.cv.wait(lock, [&t] { return t.end; });
      }
    });
  }
  Py_RETURN_TRUE;
}

// sparse_engine._C._end_openmp_team(): wakes the team of _shorten_openmp_spin and waits for its
// thread to end (nothing when there is none). Returns whether there was one.
static PyObject* end_openmp_team(PyObject*, PyObject*) {
  SleepingTeam& t = sleeping_team();
  {
    std::lock_guard<std::mutex> lock(t.m);
    t.end = true;
  }
  t.cv.notify_all();
  if (!t.thread.joinable() || t.pid != getpid()) Py_RETURN_FALSE;  // (a fork's child: left as it is)
  Py_BEGIN_ALLOW_THREADS
  t.thread.join();
  Py_END_ALLOW_THREADS
  Py_RETURN_TRUE;
}

// sparse_engine._C._set_this_thread_threads(omp, mkl): the calling thread's OpenMP threads (omp_set_num_threads:
// an ICV of the calling thread, which torch's parallel regions and oneDNN read through omp_get_max_threads) set to
// omp where omp > 0, and its thread-local MKL threads (MKL's mkl_set_num_threads_local, whose C entry point is
// MKL_Set_Num_Threads_Local: the lower-case symbol is the Fortran one, taking a pointer; found in torch's
// libtorch_cpu where it carries MKL; 0 = MKL's global setting) to mkl where mkl >= 0. Returns the pair in force before
// (omp_get_max_threads(); MKL's thread-local setting, -1 where there is no MKL or mkl < 0), which a second call
// puts back.
// Unlike torch.set_num_threads it leaves other threads alone: torch keeps one process-wide count from which a
// thread that first uses torch takes its own, so a thread starting while that count is lowered keeps the lower
// count for good (sparse_engine/runtime/threads.py, one_thread_here).
using MklLocalThreads = int (*)(int);
static MklLocalThreads mkl_local_threads() {
  static const MklLocalThreads fn = [] {
    void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    return lib ? reinterpret_cast<MklLocalThreads>(dlsym(lib, "MKL_Set_Num_Threads_Local")) : nullptr;
  }();
  return fn;
}

static PyObject* set_this_thread_threads(PyObject*, PyObject* args) {
  int omp = 0, mkl = -1;
  if (!PyArg_ParseTuple(args, "ii", &omp, &mkl)) return nullptr;
  const int old_omp = omp_get_max_threads();
  int old_mkl = -1;
  MklLocalThreads fn = mkl_local_threads();
  if (fn && mkl >= 0) old_mkl = fn(mkl);  // first: MKL's setter sets this thread's OpenMP threads too
  if (omp > 0) omp_set_num_threads(omp);
  return Py_BuildValue("(ii)", old_omp, old_mkl);
}

// sparse_engine._C._parallel_work(): the work from which the CPU kernels use several threads
// (csrc/cpu/common.h, parallel_work: kParallelWork unless _set_parallel_work changed it).
static PyObject* parallel_work(PyObject*, PyObject*) {
  return PyLong_FromLongLong(sparse_engine::parallel_work());
}

// sparse_engine._C._set_parallel_work(work): that bound, for tests that split small inputs across
// threads and the benchmark that measures it; returns the bound in force before. Results do not
// depend on it.
static PyObject* set_parallel_work(PyObject*, PyObject* args) {
  long long work = 0;
  if (!PyArg_ParseTuple(args, "L", &work)) return nullptr;
  if (work < 0) {
    PyErr_SetString(PyExc_ValueError, "_set_parallel_work: work must be >= 0");
    return nullptr;
  }
  return PyLong_FromLongLong(sparse_engine::g_parallel_work.exchange(work));
}

// sparse_engine._C._pool_stats(): (jobs, worker_chunks, busy, nested, workers, stalls) of the CPU
// kernels' thread pool (csrc/cpu/thread_pool.h): the parallel jobs it ran, the chunks its workers
// ran, the calls that ran on their calling thread because another thread's job held the pool or
// because they came from inside a chunk, the workers started so far in this process, and the
// jobs whose caller waited long for a preempted worker (after which workers leave it a reserve).
static PyObject* pool_stats(PyObject*, PyObject*) {
  auto& st = sparse_engine::pool::stats();
  const sparse_engine::pool::ThreadPool* p = sparse_engine::pool::g_pool.load();
  return Py_BuildValue("(LLLLiL)", static_cast<long long>(st.jobs.load()),
                       static_cast<long long>(st.worker_chunks.load()), static_cast<long long>(st.busy.load()),
                       static_cast<long long>(st.nested.load()), p ? p->workers() : 0,
                       static_cast<long long>(st.stalls.load()));
}

// sparse_engine._C._pool_check(chunks, threads, throw_at, hold_ms, inner): the pool's contract on
// a job of its own, for tests/ops/test_thread_pool.py (the GIL released, so two Python threads can
// call it at once). Chunk c adds 1 to a counter of its own; chunk `throw_at` (>= 0) raises a
// ValueError (TORCH_CHECK_VALUE) instead; chunk 0 first sleeps `hold_ms` milliseconds; every chunk
// runs a nested call of `inner` chunks. Returns (every chunk but throw_at ran exactly once, the
// chunks that ran off the calling thread, every nested chunk ran on its chunk's thread).
static PyObject* pool_check(PyObject*, PyObject* args) {
  long long chunks = 0, throw_at = -1, hold_ms = 0, inner = 0;
  int threads = 1;
  if (!PyArg_ParseTuple(args, "LiLLL", &chunks, &threads, &throw_at, &hold_ms, &inner)) return nullptr;
  if (chunks < 0 || chunks > (1LL << 24) || inner < 0 || inner > 1024 || hold_ms < 0 || hold_ms > 60000) {
    PyErr_SetString(PyExc_ValueError, "_pool_check: chunks in [0, 2^24], inner in [0, 1024], hold_ms in [0, 60000]");
    return nullptr;
  }
  std::vector<std::atomic<int>> runs(static_cast<size_t>(chunks));
  std::atomic<int64_t> off_caller{0};
  std::atomic<bool> inner_same{true};
  std::string error;
  PyObject* error_type = nullptr;
  Py_BEGIN_ALLOW_THREADS
  try {
    const auto caller = std::this_thread::get_id();
    sparse_engine::run_chunks(chunks, threads, [&](int64_t c, int) {
      if (c == 0 && hold_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
      TORCH_CHECK_VALUE(c != throw_at, "chunk ", c, " of the pool check failed");
      const auto me = std::this_thread::get_id();
      if (me != caller) off_caller.fetch_add(1);
      sparse_engine::run_chunks(inner, threads, [&](int64_t, int) {
        if (std::this_thread::get_id() != me) inner_same = false;
      });
      runs[c].fetch_add(1);
    });
  } catch (const c10::ValueError& e) {
    error = e.what_without_backtrace();
    error_type = PyExc_ValueError;
  } catch (const std::exception& e) {
    error = e.what();
    error_type = PyExc_RuntimeError;
  }
  Py_END_ALLOW_THREADS
  if (error_type != nullptr) {
    PyErr_SetString(error_type, error.c_str());
    return nullptr;
  }
  bool once = true;
  for (long long c = 0; c < chunks; ++c) once = once && runs[c].load() == (c == throw_at ? 0 : 1);
  return Py_BuildValue("(OLO)", once ? Py_True : Py_False, static_cast<long long>(off_caller.load()),
                       inner_same.load() ? Py_True : Py_False);
}

// sparse_engine._C._set_tiling(from_bytes, panel_bytes, from_row_bytes[, by_reuse]): the cache tiling of
// the CPU gathers (csrc/cpu/tiling.h, gather_panels), for tests that run the tiled kernels on small
// inputs and benchmarks that compare; by_reuse (kept when not given) lets a sample of the pattern
// choose the panels (tiling.h, gather_panels). Returns the settings in force before, as a 4-tuple.
static PyObject* set_tiling(PyObject*, PyObject* args) {
  long long from_bytes = 0, panel_bytes = 0, from_row_bytes = 0;
  int by_reuse = -1;
  if (!PyArg_ParseTuple(args, "LLL|p", &from_bytes, &panel_bytes, &from_row_bytes, &by_reuse)) return nullptr;
  if (from_bytes < 0 || panel_bytes < 1 || from_row_bytes < 0) {
    PyErr_SetString(PyExc_ValueError, "_set_tiling: from_bytes must be >= 0, panel_bytes >= 1 and from_row_bytes >= 0");
    return nullptr;
  }
  const long long old_from = sparse_engine::kTileFromBytes.exchange(from_bytes);
  const long long old_panel = sparse_engine::kPanelBytes.exchange(panel_bytes);
  const long long old_row = sparse_engine::kTileFromRowBytes.exchange(from_row_bytes);
  const bool old_reuse = by_reuse < 0 ? sparse_engine::kTileByReuse.load()
                                      : sparse_engine::kTileByReuse.exchange(by_reuse != 0);
  return Py_BuildValue("(LLLO)", old_from, old_panel, old_row, old_reuse ? Py_True : Py_False);
}

// sparse_engine._C._sample_gathers(row_ptr_address, col_idx_address, n, src_rows, window, panel_rows):
// sample_gathers' (sampled, reuse, misses_per_pass) (csrc/cpu/tiling.h) for a contiguous CPU CSR index (int64
// row_ptr of n + 1, int32 columns in [0, src_rows)) given by its tensors' data_ptr(): private, for the
// tests that check it against their own count and the benchmarks that report it; nothing is checked here.
static PyObject* sample_gathers_py(PyObject*, PyObject* args) {
  unsigned long long ptr = 0, idx = 0;
  long long n = 0, src_rows = 0, window = 0, panel_rows = 0;
  if (!PyArg_ParseTuple(args, "KKLLLL", &ptr, &idx, &n, &src_rows, &window, &panel_rows)) return nullptr;
  const auto s = sparse_engine::sample_gathers(reinterpret_cast<const int64_t*>(ptr),
                                               reinterpret_cast<const int32_t*>(idx), n, src_rows, window, panel_rows);
  return Py_BuildValue("(Odd)", s.sampled ? Py_True : Py_False, s.reuse, s.misses_per_pass);
}

#ifdef SPARSE_ENGINE_WITH_CUDA
namespace sparse_engine::cuda {
int64_t set_rnn_sequence_stage_bytes(int64_t bytes);  // csrc/cuda/launchers.h (no CUDA headers here)
bool set_rnn_sequence_compact_index(bool allow);
int set_rnn_sequence_split(int split);
bool set_gather_long_rows(int long_mult, int seg_mult, int* old_long, int* old_seg);
}

// sparse_engine._C._set_sequence_stage_bytes(bytes): caps the bytes of W_hh each block of the
// persistent recurrent kernels stages in shared memory (0: none, read through L2 every step; -1: no
// cap, the default); returns the cap before. Outputs do not depend on it: for the tests that say so
// and the benchmark that compares staged and unstaged. CUDA builds only.
static PyObject* set_sequence_stage_bytes(PyObject*, PyObject* args) {
  long long bytes = -1;
  if (!PyArg_ParseTuple(args, "L", &bytes)) return nullptr;
  return PyLong_FromLongLong(sparse_engine::cuda::set_rnn_sequence_stage_bytes(bytes));
}

// sparse_engine._C._set_sequence_compact_index(allow): whether that stage may hold the index in 16
// bits an entry where every index fits (the default); returns the setting before (tests).
static PyObject* set_sequence_compact_index(PyObject*, PyObject* args) {
  int allow = 1;
  if (!PyArg_ParseTuple(args, "p", &allow)) return nullptr;
  return PyBool_FromLong(sparse_engine::cuda::set_rnn_sequence_compact_index(allow != 0));
}

// sparse_engine._C._set_sequence_split(split): how many of a row's entries a warp of those kernels
// takes at once: 1 (a lane per batch column; the default), 2, 4, 8, or 0 for the rule by batch width
// and mean row length; returns the setting before (tests, the benchmark). ValueError for any other value.
static PyObject* set_sequence_split(PyObject*, PyObject* args) {
  int split = 1;
  if (!PyArg_ParseTuple(args, "i", &split)) return nullptr;
  const int old = sparse_engine::cuda::set_rnn_sequence_split(split);
  if (old < 0) {
    PyErr_Format(PyExc_ValueError, "_set_sequence_split: split must be 0, 1, 2, 4 or 8, got %d", split);
    return nullptr;
  }
  return PyLong_FromLong(old);
}

// sparse_engine._C._set_gather_long_rows(long_mult, seg_mult): the CUDA gather's long-row threshold and
// segment length as multiples of the mean row (defaults 4 and 2; csrc/cuda/common.cuh); returns the
// settings before. For the GPU benchmark's sweep (benchmarks/bench_gather_tuning.py) and tests: outputs
// do not depend on them. ValueError for long_mult outside [1, 64] or seg_mult outside [2, 64].
static PyObject* set_gather_long_rows(PyObject*, PyObject* args) {
  int long_mult = 4, seg_mult = 2, old_long = 0, old_seg = 0;
  if (!PyArg_ParseTuple(args, "ii", &long_mult, &seg_mult)) return nullptr;
  if (!sparse_engine::cuda::set_gather_long_rows(long_mult, seg_mult, &old_long, &old_seg)) {
    PyErr_Format(PyExc_ValueError, "_set_gather_long_rows: long_mult must be in [1, 64] and seg_mult in [2, 64], "
                 "got %d and %d", long_mult, seg_mult);
    return nullptr;
  }
  return Py_BuildValue("(ii)", old_long, old_seg);
}
#endif

// A minimal module init so `import sparse_engine._C` loads the library (and runs the
// static registrations above) like any Python extension.
extern "C" PyObject* PyInit__C(void) {
  static PyMethodDef methods[] = {
      {"_index_scans", index_scans, METH_NOARGS, "Index content scans run so far (csrc/index_check.h)."},
      {"_shorten_openmp_spin", shorten_openmp_spin, METH_NOARGS,
       "One sleeping OpenMP team, so that libgomp's idle threads spin briefly (once per process)."},
      {"_end_openmp_team", end_openmp_team, METH_NOARGS, "Ends that team (at exit)."},
      {"_set_this_thread_threads", set_this_thread_threads, METH_VARARGS,
       "This thread's OpenMP (omp > 0) and thread-local MKL (mkl >= 0) threads; returns the pair before."},
      {"_parallel_work", parallel_work, METH_NOARGS, "Work from which the CPU kernels use several threads."},
      {"_set_parallel_work", set_parallel_work, METH_VARARGS, "Sets that work (tests, benchmarks); returns the old."},
      {"_pool_stats", pool_stats, METH_NOARGS,
       "The CPU thread pool's counters (jobs, worker_chunks, busy, nested, workers, stalls)."},
      {"_pool_check", pool_check, METH_VARARGS, "Runs a job of the pool's own (tests of its contract)."},
      {"_set_tiling", set_tiling, METH_VARARGS, "Cache tiling bounds of the CPU gathers (tests); returns the old."},
      {"_sample_gathers", sample_gathers_py, METH_VARARGS, "The CPU gathers' sample of a CSR index (tests)."},
#ifdef SPARSE_ENGINE_WITH_CUDA
      {"_set_sequence_stage_bytes", set_sequence_stage_bytes, METH_VARARGS,
       "Caps W_hh's bytes a persistent kernel's block stages in shared memory (-1 none); returns the old."},
      {"_set_sequence_compact_index", set_sequence_compact_index, METH_VARARGS,
       "Allows a 16-bit staged index where every index fits (default); returns the old setting."},
      {"_set_sequence_split", set_sequence_split, METH_VARARGS,
       "A warp's entries at once in the persistent kernels' rows (1 default, 2, 4, 8; 0 by rule); returns the old."},
      {"_set_gather_long_rows", set_gather_long_rows, METH_VARARGS,
       "The CUDA gather's long-row threshold and segment in mean rows (4, 2 default); returns the old pair."},
#endif
      {nullptr, nullptr, 0, nullptr}};
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
