// The content check of a compressed sparse index (a CSR, or the transposed index with its
// permutation) before a kernel gathers through it, done once per pattern and remembered.
//
// checks.h checks what costs O(1): dtypes, shapes, and the ends of a row_ptr in host memory.
// A kernel that reads src[idx[k]] and values[perm[k]] for k in [ptr[i], ptr[i+1]) also needs
// ptr non-decreasing from 0 to nnz, every idx entry in [0, n_src) and every perm entry in
// [0, nnz); otherwise it reads out of bounds: a segfault on the CPU, and on a GPU a memory
// fault that leaves the CUDA context unusable. Checking that is a scan of O(rows + nnz) and,
// on a GPU, a copy of its result to the host (a sync): too much for every call. Patterns
// change rarely (at a topology update), so the result of a scan is remembered per index,
// keyed on its tensors' storage (the StorageImpl, held by a weak reference so that its address
// is not reused while remembered), data pointer, offset, size and stride, and version counter:
// every in-place write through torch bumps a tensor's version, so an edited index is scanned
// again. A call with a remembered index costs one hash lookup under a mutex.
//
// The scan also gives the longest row (max ptr[i+1] - ptr[i]): the CUDA ops use it to know on
// the host that no row is long enough for their long-row kernel and then do not launch it.
//
// Not seen: writes that bypass the version counter (through `.data`, a numpy or DLPack view, a
// raw pointer). Inference tensors have no version counter: they are scanned on every call.
// Device-neutral (ATen only): the CPU ops scan on the host (scan_index_cpu), the CUDA glue with
// a kernel (csrc/cuda/glue.h, launch_index_scan).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include "cpu/thread_pool.h"

namespace sparse_engine {

// What a scan of a compressed index (ptr: n+1 entries; idx and perm: nnz entries) found. The
// CUDA scan (launch_index_scan, csrc/cuda/launchers.h) writes these six int64 in this order.
struct IndexScan {
  int64_t ptr_first, ptr_last;  // ptr[0], ptr[n]
  int64_t first_drop;           // smallest i with ptr[i+1] < ptr[i]; -1: none
  int64_t first_bad_idx;        // smallest k with idx[k] outside [0, n_src); -1: none
  int64_t first_bad_perm;       // smallest k with perm[k] outside [0, nnz); -1: none (or no perm)
  int64_t max_len;              // largest ptr[i+1] - ptr[i]; -1 when n == 0
};
static_assert(sizeof(IndexScan) == 6 * sizeof(int64_t), "IndexScan is six int64 (the CUDA scan's layout)");

// Longest row when it is not known (a CUDA graph capture, see csrc/cuda/glue.h): every row may be long.
inline constexpr int64_t kUnknownMaxLen = std::numeric_limits<int64_t>::max();

// A compressed index as an op receives it, with its arguments' names for the messages.
struct CompressedIndex {
  const at::Tensor& ptr;
  const at::Tensor& idx;
  const at::Tensor* perm;  // nullptr: a CSR (values in index order)
  const char* ptr_name;
  const char* idx_name;
  const char* perm_name;
};

// The scan on the host, over contiguous arrays.
inline IndexScan scan_index_cpu(const int64_t* ptr, const int32_t* idx, const int32_t* perm, int64_t n,
                                int64_t nnz, int64_t n_src) {
  constexpr int64_t kGrain = int64_t(1) << 15;
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  IndexScan s{ptr[0], ptr[n], -1, -1, -1, -1};
  using Rows = std::pair<int64_t, int64_t>;  // (first drop, longest row)
  const int threads = at::get_num_threads();  // the scans run on the kernels' pool, not on OpenMP
  const Rows rows = reduce_ranges(
      n, kGrain, threads, Rows{kNone, -1},
      [&](int64_t b, int64_t e, Rows r) {
        for (int64_t i = b; i < e; ++i) {
          const int64_t len = ptr[i + 1] - ptr[i];
          if (len < 0) r.first = std::min(r.first, i);
          r.second = std::max(r.second, len);
        }
        return r;
      },
      [](Rows a, Rows b) { return Rows{std::min(a.first, b.first), std::max(a.second, b.second)}; });
  auto first_outside = [&](const int32_t* a, int64_t hi) {
    return reduce_ranges(
        nnz, kGrain, threads, kNone,
        [&](int64_t b, int64_t e, int64_t r) {
          for (int64_t k = b; k < e && r == kNone; ++k)
            if (a[k] < 0 || a[k] >= hi) r = k;
          return r;
        },
        [](int64_t x, int64_t y) { return std::min(x, y); });
  };
  const int64_t bad_idx = first_outside(idx, n_src);
  const int64_t bad_perm = perm ? first_outside(perm, nnz) : kNone;
  s.first_drop = rows.first == kNone ? -1 : rows.first;
  s.max_len = rows.second;
  s.first_bad_idx = bad_idx == kNone ? -1 : bad_idx;
  s.first_bad_perm = bad_perm == kNone ? -1 : bad_perm;
  return s;
}

namespace detail {

inline int64_t entry(const at::Tensor& t, int64_t pos) { return t.select(0, pos).item<int64_t>(); }

}  // namespace detail

// Raises ValueError naming the argument and the first problem the scan found, if any (the
// offending entries are read from the tensors: on a GPU only on this error path).
inline void raise_index_problem(const CompressedIndex& ix, const IndexScan& s, int64_t n_src) {
  const int64_t nnz = ix.idx.numel(), n = ix.ptr.numel() - 1;
  TORCH_CHECK_VALUE(s.ptr_first == 0 && s.ptr_last == nnz, ix.ptr_name, " must start at 0 and end at nnz=", nnz,
                    ", got ", s.ptr_first, " and ", s.ptr_last);
  if (s.first_drop >= 0) {
    const int64_t i = s.first_drop;
    TORCH_CHECK_VALUE(false, ix.ptr_name, " must be non-decreasing, got ", ix.ptr_name, "[", i,
                      "]=", detail::entry(ix.ptr, i), " > ", ix.ptr_name, "[", i + 1, "]=", detail::entry(ix.ptr, i + 1),
                      " (", n, " rows)");
  }
  if (s.first_bad_idx >= 0)
    TORCH_CHECK_VALUE(false, ix.idx_name, " entry ", detail::entry(ix.idx, s.first_bad_idx), " (position ",
                      s.first_bad_idx, ") out of range [0, ", n_src, ")");
  if (s.first_bad_perm >= 0 && ix.perm != nullptr)
    TORCH_CHECK_VALUE(false, ix.perm_name, " entry ", detail::entry(*ix.perm, s.first_bad_perm), " (position ",
                      s.first_bad_perm, ") out of range [0, nnz=", nnz, ")");
}

// The remembered scans: (index tensors, n_src) -> longest row, for indices that passed.
class IndexCache {
 public:
  static IndexCache& instance() {
    static IndexCache* cache = new IndexCache;  // never destroyed: ops may run during interpreter exit
    return *cache;
  }

  // One tensor as the cache sees it; `usable` is false for a tensor that cannot be tracked
  // (no storage, or an inference tensor: no version counter).
  struct TensorState {
    const void* storage = nullptr;
    const void* data = nullptr;
    int64_t offset = 0, numel = 0, stride = 0, version = 0;
    bool usable = false;
    bool operator==(const TensorState& o) const {
      return storage == o.storage && data == o.data && offset == o.offset && numel == o.numel &&
             stride == o.stride && version == o.version && usable == o.usable;
    }
  };

  static TensorState state_of(const at::Tensor* t) {
    TensorState s;
    if (t == nullptr) {
      s.usable = true;  // an absent perm
      return s;
    }
    if (!t->has_storage() || t->is_inference()) return s;
    s.storage = t->storage().unsafeGetStorageImpl();
    s.data = t->const_data_ptr();
    s.offset = t->storage_offset();
    s.numel = t->numel();
    s.stride = t->dim() == 1 ? t->stride(0) : 0;
    s.version = t->_version();
    s.usable = true;
    return s;
  }

  struct Key {
    std::array<TensorState, 3> tensors;  // ptr, idx, perm
    int64_t n_src;
    bool usable() const { return tensors[0].usable && tensors[1].usable && tensors[2].usable; }
  };

  static Key key_of(const CompressedIndex& ix, int64_t n_src) {
    return {{state_of(&ix.ptr), state_of(&ix.idx), state_of(ix.perm)}, n_src};
  }

  // The longest row remembered for exactly this index, if any; with `sorted`, only if the index
  // is also known to have its idx strictly increasing within each row (what rewire needs).
  std::optional<int64_t> find(const Key& key, bool sorted = false) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = map_.find(slot_of(key));
    if (it == map_.end() || !(it->second.key.tensors == key.tensors) || it->second.key.n_src != key.n_src ||
        (sorted && !it->second.sorted))
      return std::nullopt;
    return it->second.max_len;
  }

  void insert(const Key& key, const CompressedIndex& ix, int64_t max_len, bool sorted = false) {
    Entry e{key, {pin(&ix.ptr), pin(&ix.idx), pin(ix.perm)}, max_len, sorted};
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = map_.find(slot_of(key));
    if (it != map_.end() && it->second.key.tensors == key.tensors && it->second.key.n_src == key.n_src)
      e.sorted = e.sorted || it->second.sorted;  // what is known of an unchanged index stays known
    if (map_.size() >= kMaxEntries) evict();
    map_.insert_or_assign(slot_of(key), std::move(e));
  }

  size_t size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return map_.size();
  }

  // Scans run so far in this process (sparse_engine._C._index_scans(), for the tests).
  int64_t scans() const { return scans_.load(); }
  void count_scan() { ++scans_; }

 private:
  static constexpr size_t kMaxEntries = 4096;
  using Pin = std::optional<c10::weak_intrusive_ptr<c10::StorageImpl>>;
  using Slot = std::array<const void*, 3>;  // the three storages
  struct SlotHash {
    size_t operator()(const Slot& s) const {
      size_t h = 0;
      for (const void* p : s) h = h * 1000003u ^ std::hash<const void*>()(p);
      return h;
    }
  };
  struct Entry {
    Key key;
    std::array<Pin, 3> pins;  // keep the StorageImpl objects (not their data) alive: no address reuse
    int64_t max_len;
    bool sorted;  // idx strictly increasing within each row (checked, or built so by rewire)
  };

  static Slot slot_of(const Key& key) {
    return {key.tensors[0].storage, key.tensors[1].storage, key.tensors[2].storage};
  }
  static Pin pin(const at::Tensor* t) {
    if (t == nullptr) return std::nullopt;
    return t->storage().getWeakStorageImpl();
  }
  // Drops the entries of freed tensors; if that is not enough, everything (scanned again on use).
  void evict() {
    for (auto it = map_.begin(); it != map_.end();) {
      bool dead = false;
      for (const Pin& p : it->second.pins) dead = dead || (p && p->expired());
      it = dead ? map_.erase(it) : std::next(it);
    }
    if (map_.size() >= kMaxEntries) map_.clear();
  }

  std::mutex mutex_;
  std::unordered_map<Slot, Entry, SlotHash> map_;
  std::atomic<int64_t> scans_{0};
};

// Checks the content of the compressed index `ix` whose idx entries point at n_src source rows
// (ValueError naming the argument and the first problem) and returns its longest row: from the
// remembered scan when the index's tensors are unchanged, else by `scan()` (a device's scan of
// the index, returning IndexScan, or nullopt when it cannot scan now: then kUnknownMaxLen, unchecked
// and not remembered).
template <typename Scan>
int64_t checked_max_len(const CompressedIndex& ix, int64_t n_src, Scan&& scan) {
  IndexCache& cache = IndexCache::instance();
  const IndexCache::Key key = IndexCache::key_of(ix, n_src);
  if (key.usable()) {
    if (const auto hit = cache.find(key)) return *hit;
  }
  const std::optional<IndexScan> s = scan();
  if (!s) return kUnknownMaxLen;
  cache.count_scan();
  raise_index_problem(ix, *s, n_src);
  const int64_t max_len = std::max<int64_t>(s->max_len, 0);
  if (key.usable()) cache.insert(key, ix, max_len);
  return max_len;
}

// checked_max_len for an index in host memory.
inline int64_t cpu_checked_max_len(const CompressedIndex& ix, int64_t n_src) {
  return checked_max_len(ix, n_src, [&]() -> std::optional<IndexScan> {
    const at::Tensor ptr = ix.ptr.contiguous(), idx = ix.idx.contiguous();
    const at::Tensor perm = ix.perm ? ix.perm->contiguous() : at::Tensor();
    return scan_index_cpu(ptr.const_data_ptr<int64_t>(), idx.const_data_ptr<int32_t>(),
                          ix.perm ? perm.const_data_ptr<int32_t>() : nullptr, ptr.numel() - 1, idx.numel(), n_src);
  });
}

// The content check of a whole CSR pattern in host memory, on every call, for the ops that read
// the whole pattern anyway (topology, densify, analysis: O(rows + nnz) like the op itself, so
// nothing is remembered): row_ptr non-decreasing from 0 to nnz, every column in [0, n_cols), and
// with `sorted` the columns strictly increasing within each row (sorted and unique), which those
// ops' results depend on. ValueError naming the argument and the first problem, worded like the
// products' remembered check above. The Python twin is sparse_engine.sparse.csr.check_pattern.
// Returns the longest row (0 for no rows).
inline int64_t check_csr_content(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n_cols, bool sorted) {
  const at::Tensor ptr_c = row_ptr.contiguous(), idx_c = col_idx.contiguous();
  const int64_t* ptr = ptr_c.const_data_ptr<int64_t>();
  const int32_t* idx = idx_c.const_data_ptr<int32_t>();
  const int64_t n = ptr_c.numel() - 1, nnz = idx_c.numel();
  const IndexScan scan = scan_index_cpu(ptr, idx, nullptr, n, nnz, n_cols);
  raise_index_problem({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, scan, n_cols);
  const int64_t max_len = std::max<int64_t>(scan.max_len, 0);
  if (!sorted) return max_len;
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  const int64_t row = reduce_ranges(
      n, int64_t(1) << 12, at::get_num_threads(), kNone,
      [&](int64_t b, int64_t e, int64_t r) {
        for (int64_t i = b; i < e && r == kNone; ++i)
          for (int64_t k = ptr[i] + 1; k < ptr[i + 1]; ++k)
            if (idx[k] <= idx[k - 1]) {
              r = i;
              break;
            }
        return r;
      },
      [](int64_t x, int64_t y) { return std::min(x, y); });
  if (row == kNone) return max_len;
  int64_t k = ptr[row] + 1;
  while (idx[k] > idx[k - 1]) ++k;
  TORCH_CHECK_VALUE(false, "col_idx must be sorted and unique within each row: ",
                    idx[k] == idx[k - 1] ? "duplicate" : "unsorted", " column ", idx[k], " in row ", row);
}

// check_csr_content(sorted) remembered like the products' scans, for a pattern that comes back
// again and again unchanged: a layer's weight at each topology update (rewire). The patterns
// rewire builds are remembered as checked (remember_sorted_csr), so a layer's next update, and
// the products between, scan nothing; an index changed in place (new version) is scanned again.
// The same blind spot as the products' cache: writes that bypass the version counter.
inline void check_sorted_csr_remembered(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n_cols) {
  IndexCache& cache = IndexCache::instance();
  const CompressedIndex ix{row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr};
  const IndexCache::Key key = IndexCache::key_of(ix, n_cols);
  if (key.usable() && cache.find(key, /*sorted=*/true)) return;
  cache.count_scan();
  const int64_t max_len = check_csr_content(row_ptr, col_idx, n_cols, /*sorted=*/true);
  if (key.usable()) cache.insert(key, ix, max_len, /*sorted=*/true);
}

// Remembers a CSR pattern an op has just built, valid and sorted by construction (rewire's
// output): row_ptr contiguous int64 of n + 1 entries, col_idx int32 in [0, n_cols).
inline void remember_sorted_csr(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n_cols) {
  const CompressedIndex ix{row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr};
  const IndexCache::Key key = IndexCache::key_of(ix, n_cols);
  if (!key.usable()) return;
  const int64_t* ptr = row_ptr.const_data_ptr<int64_t>();
  int64_t max_len = 0;
  for (int64_t i = 0; i + 1 < row_ptr.numel(); ++i) max_len = std::max(max_len, ptr[i + 1] - ptr[i]);
  IndexCache::instance().insert(key, ix, max_len, /*sorted=*/true);
}

// Columns of a pattern whose column count is not known to the op (compact): any int32 but a negative one.
inline constexpr int64_t kAnyColumn = int64_t(1) << 31;

}  // namespace sparse_engine
