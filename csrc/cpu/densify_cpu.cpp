// The dense-compute path's conversions between a CSR weight and its dense matrix
// (sparse_engine/nn/compute.py), two ways:
//
// through the pattern as bits: one bit per matrix entry, set where an entry is stored, in 16-bit
// words (words[r, j] bit b: column 16 j + b of row r), CPU only:
//   pattern_bits(row_ptr, col_idx, n_cols)   the words, int16 [rows, ceil(n_cols / 16)], once per pattern
//   expand_bits(row_ptr, bits, values, dense)  dense <- the values at the pattern, zeros elsewhere
//   compress_bits(row_ptr, bits, dense)        the values of dense at the pattern (its gradient)
//   same_bytes(a, b)                           whether two tensors hold the same bytes
// and through the CSR itself, on every device (on CUDA the Python kernels of
// sparse_engine/kernels/densify_cuda.py):
//   scatter_csr(row_ptr, col_idx, values, dense)  dense[r, c] <- values at the stored positions only
//   gather_csr(row_ptr, col_idx, dense)           the values of dense at the stored positions
//
// Why bits on the CPU: a row is written 16
// columns at a time from the word and the row's next values (AVX-512 expand; compress for the
// gradient), whole rows with their zeros, with 1/16 of a float per entry of index traffic
// instead of an int32 per stored entry. At 800 x 200, 33%, one thread: 17 us where scatter_csr
// takes 28 us, 15 us where gather_csr takes 32 us. same_bytes lets a forward without a gradient
// skip the write when the values are the bytes it wrote last time (compute.py says when that is
// safe): a memcmp of the values and a kept copy, about 5 us for 53k floats where comparing them
// with the dense matrix row by row took 30 (a loop bound by its compress latency); in the
// forward of a 200-unit LSTM it cost a quarter of what that comparison did. On other devices the
// dense path uses scatter_csr / gather_csr.
//
// Every bits op checks that each row's bits count its row_ptr entries, so a bits tensor that does
// not belong to the pattern cannot make a kernel read or write out of bounds.
#include <torch/library.h>
#include <cstring>
#include <limits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include "common.h"

namespace sparse_engine {
namespace {

constexpr int64_t kBitsPerWord = 16;

inline int64_t words_for(int64_t cols) { return (cols + kBitsPerWord - 1) / kBitsPerWord; }

inline int popcount16(uint16_t w) { return __builtin_popcount(static_cast<unsigned>(w)); }

// A copy goes parallel from this many dense entries (about 0.1 ms on one thread): below it the
// team costs about what it saves (the dense path's 800 x 200 matrices are 160k entries).
constexpr int64_t kParallelEntries = int64_t(1) << 20;

// The number of entries a row's words hold.
inline int64_t row_count(const uint16_t* bits, int64_t W) {
  int64_t n = 0;
  for (int64_t j = 0; j < W; ++j) n += popcount16(bits[j]);
  return n;
}

// ------------------------------------------------------------------ the row kernels
// expand: row[c] = the next value where bit c is set, else 0, for c < cols. compress: the
// reverse. U is the element's bit pattern (the bytes are copied, whatever the dtype).
template <typename U>
void expand_row_scalar(const uint16_t* bits, const U* v, U* row, int64_t cols) {
  for (int64_t c0 = 0, j = 0; c0 < cols; c0 += kBitsPerWord, ++j) {
    const unsigned w = bits[j];
    const int64_t n = std::min<int64_t>(kBitsPerWord, cols - c0);
    for (int64_t b = 0; b < n; ++b) row[c0 + b] = ((w >> b) & 1u) ? *v++ : U(0);
  }
}

template <typename U>
void compress_row_scalar(const uint16_t* bits, U* v, const U* row, int64_t cols) {
  for (int64_t c0 = 0, j = 0; c0 < cols; c0 += kBitsPerWord, ++j) {
    unsigned w = bits[j];
    while (w) {
      *v++ = row[c0 + __builtin_ctz(w)];
      w &= w - 1;
    }
  }
}

#if defined(__AVX512F__)
// 4-byte elements: one 16-lane expand (compress) per word; the last word's store (load) masked
// to the row's columns.
void expand_row(const uint16_t* bits, const uint32_t* v, uint32_t* row, int64_t cols) {
  const int64_t full = cols / kBitsPerWord;
  for (int64_t j = 0; j < full; ++j) {
    const __mmask16 k = bits[j];
    _mm512_storeu_si512(row + kBitsPerWord * j, _mm512_maskz_expandloadu_epi32(k, v));
    v += popcount16(k);
  }
  if (const int64_t rest = cols - full * kBitsPerWord) {
    const __mmask16 k = bits[full];
    _mm512_mask_storeu_epi32(row + kBitsPerWord * full, static_cast<__mmask16>((1u << rest) - 1),
                             _mm512_maskz_expandloadu_epi32(k, v));
  }
}

void compress_row(const uint16_t* bits, uint32_t* v, const uint32_t* row, int64_t cols) {
  const int64_t full = cols / kBitsPerWord;
  for (int64_t j = 0; j <= full; ++j) {
    const int64_t rest = std::min<int64_t>(kBitsPerWord, cols - j * kBitsPerWord);
    if (rest <= 0) break;
    const __mmask16 k = bits[j];
    const __m512i x = rest == kBitsPerWord
                          ? _mm512_loadu_si512(row + kBitsPerWord * j)
                          : _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << rest) - 1), row + kBitsPerWord * j);
    const int n = popcount16(k);
    _mm512_mask_storeu_epi32(v, static_cast<__mmask16>((1u << n) - 1), _mm512_maskz_compress_epi32(k, x));
    v += n;
  }
}

// 8-byte elements: two 8-lane expands (compresses) per word.
void expand_row(const uint16_t* bits, const uint64_t* v, uint64_t* row, int64_t cols) {
  for (int64_t c0 = 0, j = 0; c0 < cols; c0 += kBitsPerWord, ++j) {
    for (int half = 0; half < 2; ++half) {
      const int64_t at = c0 + 8 * half, rest = std::min<int64_t>(8, cols - at);
      if (rest <= 0) break;
      const __mmask8 k = static_cast<__mmask8>(bits[j] >> (8 * half));
      const __m512i x = _mm512_maskz_expandloadu_epi64(k, v);
      if (rest == 8) _mm512_storeu_si512(row + at, x);
      else _mm512_mask_storeu_epi64(row + at, static_cast<__mmask8>((1u << rest) - 1), x);
      v += __builtin_popcount(static_cast<unsigned>(k));
    }
  }
}

void compress_row(const uint16_t* bits, uint64_t* v, const uint64_t* row, int64_t cols) {
  for (int64_t c0 = 0, j = 0; c0 < cols; c0 += kBitsPerWord, ++j) {
    for (int half = 0; half < 2; ++half) {
      const int64_t at = c0 + 8 * half, rest = std::min<int64_t>(8, cols - at);
      if (rest <= 0) break;
      const __mmask8 k = static_cast<__mmask8>(bits[j] >> (8 * half));
      const __m512i x = rest == 8 ? _mm512_loadu_si512(row + at)
                                  : _mm512_maskz_loadu_epi64(static_cast<__mmask8>((1u << rest) - 1), row + at);
      const int n = __builtin_popcount(static_cast<unsigned>(k));
      _mm512_mask_storeu_epi64(v, static_cast<__mmask8>((1u << n) - 1), _mm512_maskz_compress_epi64(k, x));
      v += n;
    }
  }
}
#endif

template <typename U>
void expand_any(const uint16_t* bits, const U* v, U* row, int64_t cols) {
#if defined(__AVX512F__)
  if constexpr (sizeof(U) == 4 || sizeof(U) == 8) return expand_row(bits, v, row, cols);
#endif
  expand_row_scalar(bits, v, row, cols);
}

template <typename U>
void compress_any(const uint16_t* bits, U* v, const U* row, int64_t cols) {
#if defined(__AVX512F__)
  if constexpr (sizeof(U) == 4 || sizeof(U) == 8) return compress_row(bits, v, row, cols);
#endif
  compress_row_scalar(bits, v, row, cols);
}

// What bits_copy does with a row: expand it or compress it.
enum class Copy { kExpand, kCompress };

// Rows of dense (row stride s0, unit column stride) <-> values [rp[rows]], over the element's
// bytes; returns the rows copied, or -1 where a row's bits do not count its row_ptr entries or
// its entries are not within the values (that row is skipped, the others copied).
template <typename U, Copy kMode>
int64_t bits_copy(const int64_t* rp, const uint16_t* bits, U* values, U* dense, int64_t rows, int64_t cols,
                  int64_t s0) {
  const int64_t W = words_for(cols), nnz = rp[rows];
  const auto rows_in = [&](int64_t r0, int64_t r1) {
    int64_t written = 0;
    bool ok = true;
    for (int64_t r = r0; r < r1; ++r) {
      const uint16_t* b = bits + r * W;
      if (rp[r] < 0 || rp[r + 1] > nnz || row_count(b, W) != rp[r + 1] - rp[r]) {
        ok = false;
        continue;
      }
      U* v = values + rp[r];
      U* row = dense + r * s0;
      if constexpr (kMode == Copy::kCompress) compress_any<U>(b, v, row, cols);
      else expand_any<U>(b, v, row, cols);
      ++written;
    }
    return ok ? written : int64_t(-1);
  };
  if (rows * cols < kParallelEntries || kernel_threads() == 1) return rows_in(0, rows);
  const int64_t chunks = num_chunks(rows);
  std::vector<int64_t> copied(chunks);  // per chunk: its rows copied, or -1
  parallel_chunks(chunks, true, [&](int64_t c) { copied[c] = rows_in(rows * c / chunks, rows * (c + 1) / chunks); });
  int64_t written = 0;
  for (const int64_t n : copied) {
    if (n < 0) return -1;
    written += n;
  }
  return written;
}

template <Copy kMode>
int64_t bits_copy_any(const at::Tensor& row_ptr, const at::Tensor& bits, const at::Tensor& values,
                      const at::Tensor& dense) {
  const int64_t rows = dense.size(0), cols = dense.size(1), s0 = dense.stride(0);
  const int64_t* rp = row_ptr.const_data_ptr<int64_t>();
  const auto* b = reinterpret_cast<const uint16_t*>(bits.const_data_ptr<int16_t>());
  void *vp = values.data_ptr(), *dp = dense.data_ptr();
  int64_t written = 0;
  switch (dense.element_size()) {
    case 2: written = bits_copy<uint16_t, kMode>(rp, b, static_cast<uint16_t*>(vp), static_cast<uint16_t*>(dp), rows,
                                                 cols, s0);
            break;
    case 4: written = bits_copy<uint32_t, kMode>(rp, b, static_cast<uint32_t*>(vp), static_cast<uint32_t*>(dp), rows,
                                                 cols, s0);
            break;
    case 8: written = bits_copy<uint64_t, kMode>(rp, b, static_cast<uint64_t*>(vp), static_cast<uint64_t*>(dp), rows,
                                                 cols, s0);
            break;
    default: TORCH_CHECK_TYPE(false, "dense must have an element size of 2, 4 or 8 bytes, got ", dense.scalar_type());
  }
  TORCH_CHECK_VALUE(written >= 0, "bits must hold as many entries per row as row_ptr (the bits of another pattern?)");
  return written;
}

// row_ptr (contiguous, ends checked), bits int16 [rows, ceil(cols / 16)] contiguous, dense 2-D
// [rows, cols] with unit column stride; returns nnz. (That each row's bits count its entries is
// checked by the copy, row by row.)
int64_t check_bits_args(const at::Tensor& row_ptr, const at::Tensor& bits, const at::Tensor& dense) {
  detail::check_dtype(row_ptr, "row_ptr", at::kLong, "int64");
  detail::check_ptr_shape(row_ptr, "row_ptr", "rows");
  TORCH_CHECK_VALUE(row_ptr.is_contiguous(), "row_ptr must be contiguous");
  TORCH_CHECK_VALUE(dense.dim() == 2, "dense must be 2-D, got ", dense.dim(), " dims");
  const int64_t rows = row_ptr.numel() - 1, cols = dense.size(1);
  TORCH_CHECK_VALUE(dense.size(0) == rows, "dense must have rows=", rows, " rows, got shape ", dense.sizes());
  TORCH_CHECK_VALUE((dense.stride(1) == 1 || cols <= 1) && (dense.stride(0) >= cols || rows <= 1),
                    "dense must have unit column stride and rows that do not overlap, got strides ", dense.strides());
  detail::check_dtype(bits, "bits", at::kShort, "int16");
  TORCH_CHECK_VALUE(bits.dim() == 2 && bits.size(0) == rows && bits.size(1) == words_for(cols) && bits.is_contiguous(),
                    "bits must be contiguous of shape (", rows, ", ", words_for(cols), "), got ", bits.sizes());
  const int64_t* rp = row_ptr.const_data_ptr<int64_t>();
  const int64_t nnz = rp[rows];
  TORCH_CHECK_VALUE(rp[0] == 0 && nnz >= 0, "row_ptr must start at 0, got ", rp[0]);
  // no bit at a column >= cols in a row's last word (the copy would count an entry it cannot place)
  if (const int64_t used = cols % kBitsPerWord) {
    const auto* b = reinterpret_cast<const uint16_t*>(bits.const_data_ptr<int16_t>());
    const uint16_t past = static_cast<uint16_t>(~((1u << used) - 1));
    for (int64_t r = 0; r < rows; ++r)
      TORCH_CHECK_VALUE((b[r * words_for(cols) + words_for(cols) - 1] & past) == 0, "bits must have no bit at a column >= ",
                        cols, " (row ", r, ")");
  }
  return nnz;
}

// ------------------------------------------------------------------ the ops
at::Tensor pattern_bits_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n_cols) {
  const CsrSizes s = check_csr(row_ptr, col_idx);
  TORCH_CHECK_VALUE(n_cols >= 0 && n_cols <= INT32_MAX, "n_cols must be in [0, 2^31), got ", n_cols);
  check_csr_content(row_ptr, col_idx, n_cols, /*sorted=*/true);  // one bit per entry
  const int64_t W = words_for(n_cols);
  auto out = at::zeros({s.rows, W}, row_ptr.options().dtype(at::kShort));
  const auto rp = row_ptr.contiguous();
  const auto ci = col_idx.contiguous();
  const int64_t* r = rp.const_data_ptr<int64_t>();
  const int32_t* c = ci.const_data_ptr<int32_t>();
  auto* bits = reinterpret_cast<uint16_t*>(out.data_ptr<int16_t>());
  for (int64_t i = 0; i < s.rows; ++i) {
    for (int64_t k = r[i]; k < r[i + 1]; ++k) {
      const int64_t col = c[k];
      bits[i * W + col / kBitsPerWord] |= static_cast<uint16_t>(1u << (col % kBitsPerWord));
    }
  }
  return out;
}

// values and dense of one dtype, values 1-D with nnz entries; the values made contiguous
at::Tensor checked_values(const at::Tensor& values, const at::Tensor& dense, int64_t nnz) {
  TORCH_CHECK_VALUE(values.dim() == 1 && values.numel() == nnz, "values must be 1-D with nnz=", nnz,
                    " entries, got shape ", values.sizes());
  TORCH_CHECK_TYPE(values.scalar_type() == dense.scalar_type(), "values must have dense's dtype ",
                   dense.scalar_type(), ", got ", values.scalar_type());
  return values.contiguous();
}

void expand_bits_cpu(const at::Tensor& row_ptr, const at::Tensor& bits, const at::Tensor& values,
                     const at::Tensor& dense) {
  const int64_t nnz = check_bits_args(row_ptr, bits, dense);
  bits_copy_any<Copy::kExpand>(row_ptr, bits, checked_values(values, dense, nnz), dense);
}

at::Tensor compress_bits_cpu(const at::Tensor& row_ptr, const at::Tensor& bits, const at::Tensor& dense) {
  const auto d = dense.dim() == 2 && dense.stride(1) != 1 ? dense.contiguous() : dense;
  const int64_t nnz = check_bits_args(row_ptr, bits, d);
  auto out = at::empty({nnz}, d.options());
  bits_copy_any<Copy::kCompress>(row_ptr, bits, out, d);
  return out;
}

bool same_bytes_cpu(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto x = a.contiguous(), y = b.contiguous();
  if (x.numel() == 0) return true;
  return std::memcmp(x.const_data_ptr(), y.const_data_ptr(), x.numel() * x.element_size()) == 0;
}

// ------------------------------------------------------------------ CSR <-> dense
// scatter_csr writes the values into a dense matrix at the pattern's positions, gather_csr reads
// a dense matrix there: the dense-compute path of the recurrent modules (sparse_engine/nn/
// compute.py) materialises its weights with the first and takes their gradient with the second.
// Row by row over the CSR (the int32 column index, no int64 positions: half the index traffic of
// torch's scatter/index_select, which matters as much for what stays in cache for the products
// that follow as for the copy itself). Any dtype (the bits are copied), any strides of dense.

// The element copy of either direction over rows [r0, r1): sparse[k] <-> dense[r * s0 +
// col_idx[k] * s1]; false where a column is out of range or, into dense, not above the row's
// previous one (a duplicate would make the result depend on the order of the writes; that entry
// is skipped, the others are copied). One scalar loop with the range test in it, outside the parallel loop: at 800 x 200,
// 33%, one thread, 20 us, where a separate test pass took 28 us more and the parallel region's
// outlined loop 20 us more.
template <typename U, bool kToDense, bool kUnitStride>
bool csr_copy_rows(const int64_t* __restrict rp, const int32_t* __restrict ci, U* __restrict sparse,
                   U* __restrict dense, int64_t r0, int64_t r1, int64_t cols, int64_t s0, int64_t s1) {
  const uint32_t n_cols = static_cast<uint32_t>(std::min<int64_t>(cols, std::numeric_limits<uint32_t>::max()));
  bool ok = true;
  for (int64_t r = r0; r < r1; ++r) {
    U* __restrict row = dense + r * s0;
    const int64_t k1 = rp[r + 1];
    int64_t prev = -1;
    for (int64_t k = rp[r]; k < k1; ++k) {
      const uint32_t c = static_cast<uint32_t>(ci[k]);  // a negative index becomes >= n_cols
      if (c >= n_cols || (kToDense && static_cast<int64_t>(c) <= prev)) {
        ok = false;
        continue;
      }
      if constexpr (kToDense) prev = c;
      const int64_t at = kUnitStride ? c : c * s1;
      if constexpr (kToDense) row[at] = sparse[k];
      else sparse[k] = row[at];
    }
  }
  return ok;
}

// A copy is a fraction of a nanosecond per entry, so it goes parallel only from a million entries
// (about 0.4 ms on one thread): below that, waking the team costs about as much as it saves, and
// on a busy machine one descheduled thread holds up the whole copy (the dense path writes its
// 800 x 200 matrices, 53k entries each, in about 20 us on one thread).
constexpr int64_t kParallelCopy = int64_t(1) << 20;

template <typename U, bool kToDense>
bool csr_copy(const int64_t* rp, const int32_t* ci, U* sparse, U* dense, int64_t rows, int64_t cols, int64_t s0,
              int64_t s1) {
  const auto copy = s1 == 1 ? csr_copy_rows<U, kToDense, true> : csr_copy_rows<U, kToDense, false>;
  bool ok = true;
  if (rp[rows] < kParallelCopy || kernel_threads() == 1) {
    ok = copy(rp, ci, sparse, dense, 0, rows, cols, s0, s1);
  } else {
    const int64_t chunks = num_chunks(rows);
    std::vector<char> chunk_ok(chunks);
    parallel_chunks(chunks, true, [&](int64_t c) {
      chunk_ok[c] = copy(rp, ci, sparse, dense, rows * c / chunks, rows * (c + 1) / chunks, cols, s0, s1);
    });
    ok = std::all_of(chunk_ok.begin(), chunk_ok.end(), [](char x) { return x != 0; });
  }
  return ok;
}

template <bool kToDense>
void csr_copy_any(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& sparse,
                  const at::Tensor& dense) {
  const int64_t rows = row_ptr.numel() - 1, cols = dense.size(1), s0 = dense.stride(0), s1 = dense.stride(1);
  const auto rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const int64_t* r = rp.const_data_ptr<int64_t>();
  const int32_t* c = ci.const_data_ptr<int32_t>();
  void *sp = sparse.data_ptr(), *dp = dense.data_ptr();
  bool ok = true;
  switch (dense.element_size()) {
    case 1: ok = csr_copy<uint8_t, kToDense>(r, c, static_cast<uint8_t*>(sp), static_cast<uint8_t*>(dp), rows,
                                               cols, s0, s1);
      break;
    case 2: ok = csr_copy<uint16_t, kToDense>(r, c, static_cast<uint16_t*>(sp), static_cast<uint16_t*>(dp), rows,
                                              cols, s0, s1);
      break;
    case 4: ok = csr_copy<uint32_t, kToDense>(r, c, static_cast<uint32_t*>(sp), static_cast<uint32_t*>(dp), rows,
                                              cols, s0, s1);
      break;
    case 8: ok = csr_copy<uint64_t, kToDense>(r, c, static_cast<uint64_t*>(sp), static_cast<uint64_t*>(dp), rows,
                                              cols, s0, s1);
      break;
    default: TORCH_CHECK_TYPE(false, "dense must have an element size of 1, 2, 4 or 8 bytes, got ", dense.scalar_type());
  }
  if (!ok) check_csr_content(row_ptr, col_idx, cols, /*sorted=*/kToDense);  // raises, naming the first problem
  TORCH_CHECK_VALUE(ok, "col_idx must hold the columns of dense");  // not reached
}

// The pattern (checks.h) and a 2-D dense operand with one row per pattern row.
int64_t check_csr_dense(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& dense) {
  const CsrSizes s = check_csr(row_ptr, col_idx);
  TORCH_CHECK_VALUE(dense.dim() == 2 && dense.size(0) == s.rows, "dense must be 2-D with rows=", s.rows,
                    " rows, got shape ", dense.sizes());
  // row_ptr non-decreasing, columns in range: remembered per pattern like the products' check (the
  // dense path copies the same weight at every forward and backward)
  cpu_checked_max_len({row_ptr, col_idx, nullptr, "row_ptr", "col_idx", nullptr}, dense.size(1));
  return s.nnz;
}

// dense[r, col_idx[k]] = values[k] for the entries k of every row r; the rest of dense is left as it is.
void scatter_csr_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& values,
                     const at::Tensor& dense) {
  const int64_t nnz = check_csr_dense(row_ptr, col_idx, dense);
  TORCH_CHECK_VALUE(values.dim() == 1 && values.numel() == nnz, "values must be 1-D with nnz=", nnz,
                    " entries, got shape ", values.sizes());
  TORCH_CHECK_TYPE(values.scalar_type() == dense.scalar_type(), "values must have dense's dtype ",
                   dense.scalar_type(), ", got ", values.scalar_type());
  csr_copy_any<true>(row_ptr, col_idx, values.contiguous(), dense);
}

// out[k] = dense[r, col_idx[k]] for the entries k of every row r.
at::Tensor gather_csr_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& dense) {
  const int64_t nnz = check_csr_dense(row_ptr, col_idx, dense);
  auto out = at::empty({nnz}, dense.options());
  csr_copy_any<false>(row_ptr, col_idx, out, dense);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("pattern_bits", &pattern_bits_cpu);
  m.impl("expand_bits", &expand_bits_cpu);
  m.impl("compress_bits", &compress_bits_cpu);
  m.impl("same_bytes", &same_bytes_cpu);
  m.impl("scatter_csr", &scatter_csr_cpu);
  m.impl("gather_csr", &gather_csr_cpu);
}

}  // namespace sparse_engine
