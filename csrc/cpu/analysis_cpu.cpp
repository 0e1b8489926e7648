// Structure analysis kernels (CPU): the signed triad census and the transitive semicycles
// (feed-forward loops) of the directed signed graph of a square CSR matrix, and
// degree-preserving edge swaps for null models.
//
// Graph convention: CSR entry (r, c) with value w != 0 and r != c is the directed edge c -> r
// (presynaptic c, postsynaptic r, as in y = W x) with weight w. Explicit zeros and self-loops
// are not edges.
//
// Census algorithm (never looks at all triples; in the spirit of Batagelj & Mrvar 2001):
//   * every node's neighbours (union of in- and out-neighbours) are merged from its CSR row
//     and its column (a transposed index built here), giving per dyad the bits out/in and the
//     sign of each direction;
//   * triads with three connected dyads are triangles, enumerated once each by orienting
//     every undirected edge from lower to higher (in+out degree, id) rank and intersecting forward
//     lists (see for_each_triangle): O(m^1.5) worst case, about O(m * average forward
//     degree) in practice;
//   * triads with exactly two dyads are open wedges: all wedges at each centre are counted
//     from the numbers of out-, in- and mutual neighbours, minus the closed ones (triangles);
//   * triads with exactly one dyad: for the edge {u, v}: n - deg u - deg v + t_uv, where t_uv
//     (triangles through the edge) is summed during triangle enumeration;
//   * 003 is C(n, 3) minus the rest, done in Python (exact integers).
// Signed part: in triads of the transitive types 030T, 120D, 120U and 300, every ordered
// (i, j, k) with edges i->j, j->k and i->k is a transitive semicycle, balanced when
// sign(w_ij) sign(w_jk) sign(w_ik) > 0, each w the weight of that directed edge (reciprocal
// edges keep their own signs).
//
// Why one file above 500 lines: it is the analysis family's CPU file (one per op family,
// tests/ops/test_registry.py); the census and the semicycles share the graph built from the CSR
// (neighbour merge, sign bits), written once at the top; the swaps are the family's third op.
#include <torch/library.h>
#include <random>
#include <vector>
#include "common.h"

namespace sparse_engine {
namespace {

// networkx's TRICODES (6-bit triad code -> type), 0-based: 0 = 003 ... 15 = 300.
// Code bits for an ordered triple (a, b, c): a->b 1, b->a 2, a->c 4, c->a 8, b->c 16, c->b 32.
constexpr int8_t kTricode[64] = {0, 1, 1, 2, 1, 3, 5, 7, 1, 5, 4, 6, 2, 7, 6, 10,
                                 1, 5, 3, 7, 4, 8, 8, 12, 5, 9, 8, 13, 6, 13, 11, 14,
                                 1, 4, 5, 6, 5, 8, 9, 13, 3, 8, 8, 11, 7, 12, 13, 14,
                                 2, 6, 7, 10, 6, 11, 13, 14, 7, 13, 12, 14, 10, 14, 14, 15};
// Transitive types -> slot 0..3 (030T, 120D, 120U, 300), others -1.
constexpr int8_t kTransSlot[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, -1, -1, 1, 2, -1, -1, 3};
constexpr int kSigned = 5;  // per transitive type: balanced, unbalanced semicycles, CB, PB, CI

// Dyad info seen from one end: bit 0 this->other, bit 1 other->this, bit 2 this->other is
// negative, bit 3 other->this is negative.
constexpr uint8_t kOut = 1, kIn = 2, kOutNeg = 4, kInNeg = 8;
inline uint8_t flip(uint8_t x) {
  return static_cast<uint8_t>(((x & kOut) << 1) | ((x & kIn) >> 1) | ((x & kOutNeg) << 1) | ((x & kInNeg) >> 1));
}

// Forward (rank-oriented) adjacency of the underlying undirected graph. Node u's forward
// neighbours (higher rank: larger degree, ties by id), sorted by id, sit at
// [fbeg[u], fbeg[u] + fcnt[u]) of fnbr / finfo (slots of size key[u] >= degree, so one pass
// fills them).
struct Graph {
  int64_t n = 0;
  std::vector<int64_t> key;                 // rank key (in + out edges), ties by id
  std::vector<int32_t> n_out, n_in, n_mut;  // neighbours by dyad kind
  std::vector<int64_t> fbeg;                // n+1 (prefix sums of key: slots per node)
  std::vector<int32_t> fcnt;
  std::vector<int32_t> fnbr;
  std::vector<uint8_t> finfo;
  std::vector<int64_t> fpos_out, fpos_in;   // CSR positions of u->v and v->u (-1: none), optional
  int64_t sum_asym = 0, sum_mut = 0;        // sum over edges of n - deg u - deg v
  bool par = true;                          // use several threads
};

inline bool higher(const int64_t* key, int64_t a, int64_t b) {  // rank(b) > rank(a)
  return key[b] > key[a] || (key[b] == key[a] && b > a);
}

template <typename scalar_t>
struct Builder {
  int64_t n;
  const int64_t* row_ptr;
  const int32_t* col_idx;
  const scalar_t* val;
  bool positions;
  std::vector<int64_t> optr;  // out-lists: transposed CSR of the valid entries
  std::vector<int32_t> onbr;
  std::vector<uint8_t> oneg;  // weight < 0
  std::vector<int64_t> opos;  // CSR position (only with positions)
  std::vector<int64_t> icnt;  // valid in-edges per row

  bool valid(int64_t r, int64_t k) const { return col_idx[k] != r && val[k] != scalar_t(0); }

  // Counting-sort transpose. Rows are split into T contiguous blocks; block t's entries of
  // column c go after those of blocks < t, so every out-list comes out sorted (for any T).
  void build_out(bool par) {
    // per-block column counters cost T * n: keep them within about twice the entries; up to 4
    // blocks per thread (a block held up on a busy core delays the call by less)
    const int64_t cap = std::max<int64_t>(1, 2 * row_ptr[n] / std::max<int64_t>(n, 1));
    const int T = par ? static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({4 * int64_t(kernel_threads()), 64, cap})))
                      : 1;
    std::vector<int64_t> bounds(T + 1);
    for (int t = 0; t <= T; ++t) bounds[t] = n * t / T;
    std::vector<int64_t> cnt(static_cast<size_t>(T) * n + 1, 0);  // cnt[t * n + c]
    icnt.assign(n, 0);
    parallel_chunks(T, T > 1, [&](int64_t t) {
      int64_t* ct = cnt.data() + static_cast<size_t>(t) * n;
      for (int64_t r = bounds[t]; r < bounds[t + 1]; ++r)
        for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k)
          if (valid(r, k)) ++ct[col_idx[k]], ++icnt[r];
    });
    optr.assign(n + 1, 0);
    for (int64_t c = 0; c < n; ++c) {  // cnt becomes each block's start offset per column
      int64_t o = optr[c];
      for (int t = 0; t < T; ++t) {
        const int64_t x = cnt[static_cast<size_t>(t) * n + c];
        cnt[static_cast<size_t>(t) * n + c] = o;
        o += x;
      }
      optr[c + 1] = o;
    }
    onbr.resize(optr[n]);
    oneg.resize(optr[n]);
    if (positions) opos.resize(optr[n]);
    parallel_chunks(T, T > 1, [&](int64_t t) {
      int64_t* next = cnt.data() + static_cast<size_t>(t) * n;
      for (int64_t r = bounds[t]; r < bounds[t + 1]; ++r)
        for (int64_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k)
          if (valid(r, k)) {
            const int64_t d = next[col_idx[k]]++;
            onbr[d] = static_cast<int32_t>(r);
            oneg[d] = val[k] < 0;
            if (positions) opos[d] = k;
          }
    });
  }

  // Calls f(v, info, pos_out, pos_in) for every neighbour v of u in increasing order
  // (positions are -1 unless requested).
  template <typename F>
  void merge(int64_t u, F&& f) const {
    int64_t a = row_ptr[u], ae = row_ptr[u + 1];  // in-edges c -> u (row u)
    int64_t b = optr[u], be = optr[u + 1];        // out-edges u -> r
    while (true) {
      while (a < ae && !valid(u, a)) ++a;
      const bool ha = a < ae, hb = b < be;
      if (!ha && !hb) break;
      const int64_t va = ha ? col_idx[a] : INT64_MAX, vb = hb ? onbr[b] : INT64_MAX;
      const int64_t pb = positions && hb ? opos[b] : -1;
      if (va == vb) {
        f(va, static_cast<uint8_t>(kOut | kIn | (oneg[b] ? kOutNeg : 0) | (val[a] < 0 ? kInNeg : 0)), pb, a);
        ++a, ++b;
      } else if (va < vb) {
        f(va, static_cast<uint8_t>(kIn | (val[a] < 0 ? kInNeg : 0)), int64_t(-1), a);
        ++a;
      } else {
        f(vb, static_cast<uint8_t>(kOut | (oneg[b] ? kOutNeg : 0)), pb, int64_t(-1));
        ++b;
      }
    }
  }
};

template <typename scalar_t>
Graph build_graph(const int64_t* row_ptr, const int32_t* col_idx, const scalar_t* val, int64_t n, bool positions) {
  const bool par = row_ptr[n] >= parallel_work();
  Builder<scalar_t> bld{n, row_ptr, col_idx, val, positions, {}, {}, {}, {}, {}};
  bld.build_out(par);
  Graph g;
  g.n = n;
  g.par = par;
  // Rank key: in- plus out-edges (a mutual pair counts twice), known from the transpose, so a
  // single merge pass fills the forward lists. Any total order gives each triangle once; a
  // degree-like one keeps forward lists short (at most about sqrt(2m) entries).
  g.key.resize(n);
  g.fbeg.assign(n + 1, 0);
  for (int64_t u = 0; u < n; ++u) {
    g.key[u] = bld.icnt[u] + (bld.optr[u + 1] - bld.optr[u]);
    g.fbeg[u + 1] = g.fbeg[u] + g.key[u];  // slots: an upper bound of u's forward degree
  }
  const int64_t slots = g.fbeg[n];
  g.n_out.assign(n, 0);
  g.n_in.assign(n, 0);
  g.n_mut.assign(n, 0);
  g.fcnt.assign(n, 0);
  g.fnbr.resize(slots);
  g.finfo.resize(slots);
  if (positions) {
    g.fpos_out.resize(slots);
    g.fpos_in.resize(slots);
  }
  const int64_t* key = g.key.data();
  // the sums per chunk of 256 nodes, added in chunk order
  constexpr int64_t kNodes = 256;
  const int64_t chunks = (n + kNodes - 1) / kNodes;
  struct Sums { int64_t asym = 0, mut = 0, deg_asym = 0, deg_mut = 0; };
  std::vector<Sums> sums(chunks);
  parallel_chunks(chunks, par, [&](int64_t c) {
   Sums& s = sums[c];
   for (int64_t u = c * kNodes; u < std::min(n, (c + 1) * kNodes); ++u) {
    int64_t d = g.fbeg[u], o = 0, i = 0, mu = 0;
    bld.merge(u, [&](int64_t v, uint8_t info, int64_t po, int64_t pi) {
      if ((info & 3) == 3) ++mu; else if (info & kOut) ++o; else ++i;
      if (higher(key, u, v)) {
        g.fnbr[d] = static_cast<int32_t>(v);
        g.finfo[d] = info;
        if (positions) g.fpos_out[d] = po, g.fpos_in[d] = pi;
        ++d;
      }
    });
    g.fcnt[u] = static_cast<int32_t>(d - g.fbeg[u]);
    g.n_out[u] = static_cast<int32_t>(o), g.n_in[u] = static_cast<int32_t>(i), g.n_mut[u] = static_cast<int32_t>(mu);
    const int64_t deg = o + i + mu;
    s.asym += o + i, s.mut += mu, s.deg_asym += deg * (o + i), s.deg_mut += deg * mu;
   }
  });
  int64_t asym = 0, mut = 0, deg_asym = 0, deg_mut = 0;
  for (const Sums& s : sums) asym += s.asym, mut += s.mut, deg_asym += s.deg_asym, deg_mut += s.deg_mut;
  // sum over edges {u, v} of n - deg u - deg v = n * edges - sum_u deg u * (u's edges of the kind)
  g.sum_asym = asym / 2 * n - deg_asym;
  g.sum_mut = mut / 2 * n - deg_mut;
  return g;
}

// Calls f(tid, u, v, w, x, y, z) once per triangle (u, v, w in increasing rank); x, y, z are
// the forward-list slots of the dyads (u,v) seen from u, (v,w) seen from v, (u,w) seen from u.
// For each u, its forward neighbours are set in a per-thread bitmap (n bits: it stays in
// cache even at millions of nodes); for each forward neighbour v, every w in fwd(v) is tested
// against the bitmap, and only on a hit is w's slot in fwd(u) found by binary search. The
// lists fwd(v) are read sequentially, so the work is about sum over forward edges of |fwd(v)|
// cheap, well-predicted tests; when fwd(v) is much longer than fwd(u) (v a hub), u's
// neighbours are binary-searched in fwd(v) instead, so hubs are not rescanned from every
// low-degree neighbour. f is called concurrently from up to `threads` threads; tid (< threads)
// names the thread (its slot in the pool: thread_pool.h), for per-thread tallies that do not
// depend on which thread found which triangle.
template <typename F>
void for_each_triangle(const Graph& g, int threads, F&& f) {
  const int64_t n = g.n;
  const int32_t* nb = g.fnbr.data();
  constexpr int64_t kNodes = 64;  // nodes per chunk
  std::vector<std::vector<uint64_t>> bitmaps(threads);  // one per thread, made by its first chunk
  run_chunks((n + kNodes - 1) / kNodes, threads, [&](int64_t chunk, int tid) {
    std::vector<uint64_t>& bits = bitmaps[tid];
    if (bits.empty()) bits.assign((n + 63) / 64 + 1, 0);
    for (int64_t u = chunk * kNodes; u < std::min(n, (chunk + 1) * kNodes); ++u) {
      const int64_t ub = g.fbeg[u], ue = ub + g.fcnt[u];
      if (ue - ub < 2) continue;
      for (int64_t x = ub; x < ue; ++x) bits[nb[x] >> 6] |= uint64_t(1) << (nb[x] & 63);
      const int64_t lu = ue - ub;
      for (int64_t x = ub; x < ue; ++x) {
        const int64_t v = nb[x];
        const int64_t vb = g.fbeg[v], ve = vb + g.fcnt[v], lv = ve - vb;
        if (lv > 0 && lv > 3 * lu * (64 - __builtin_clzll(static_cast<uint64_t>(lv)))) {  // clz(0) is undefined
          // v is a hub next to u's short list: search u's few neighbours in fwd(v) instead
          int64_t y = vb;
          for (int64_t z = ub; z < ue && y < ve; ++z) {
            const int32_t w = nb[z];
            y = std::lower_bound(nb + y, nb + ve, w) - nb;
            if (y < ve && nb[y] == w) f(tid, u, v, static_cast<int64_t>(w), x, y, z);
          }
          continue;
        }
        for (int64_t y = vb; y < ve; ++y) {
          const int32_t w = nb[y];
          if ((bits[w >> 6] >> (w & 63)) & 1) {
            const int64_t z = std::lower_bound(nb + ub, nb + ue, w) - nb;
            f(tid, u, v, static_cast<int64_t>(w), x, y, z);
          }
        }
      }
      for (int64_t x = ub; x < ue; ++x) bits[nb[x] >> 6] = 0;
    }
  });
}

inline int tricode(uint8_t uv, uint8_t uw, uint8_t vw) {  // ordered (a, b, c) = (u, v, w)
  return (uv & 3) | ((uw & 3) << 2) | ((vw & 3) << 4);
}
inline int wedge_type(uint8_t ab, uint8_t ac) { return kTricode[(ab & 3) | ((ac & 3) << 2)]; }

// Directed edges of a triangle (nodes 0, 1, 2 = u, v, w): E exists, S negative.
struct Tri {
  bool E[3][3];
  bool S[3][3];
  Tri(uint8_t uv, uint8_t uw, uint8_t vw) {
    set(0, 1, uv);
    set(0, 2, uw);
    set(1, 2, vw);
  }
  void set(int a, int b, uint8_t x) {
    E[a][b] = x & kOut, S[a][b] = x & kOutNeg;
    E[b][a] = x & kIn, S[b][a] = x & kInNeg;
  }
};
constexpr int kPerm[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};

struct Counts {
  int64_t tri[16] = {0};
  int64_t closed[16] = {0};
  int64_t t_asym = 0, t_mut = 0;
  int64_t sig[4][kSigned] = {{0}};
};

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> census_impl(const int64_t* row_ptr, const int32_t* col_idx, const scalar_t* val,
                                               int64_t n) {
  Graph g = build_graph(row_ptr, col_idx, val, n, false);
  const int threads = g.par ? kernel_threads() : 1;
  std::vector<Counts> local(threads);  // per thread (integer tallies: their sum is the same however split)
  for_each_triangle(g, threads, [&](int tid, int64_t, int64_t, int64_t, int64_t x, int64_t y, int64_t z) {
    Counts& c = local[tid];
    const uint8_t uv = g.finfo[x], vw = g.finfo[y], uw = g.finfo[z];
    const int t = kTricode[tricode(uv, uw, vw)];
    ++c.tri[t];
    ++c.closed[wedge_type(uv, uw)];
    ++c.closed[wedge_type(flip(uv), vw)];
    ++c.closed[wedge_type(flip(uw), flip(vw))];
    for (uint8_t d : {uv, vw, uw}) {
      if ((d & 3) == 3) ++c.t_mut; else ++c.t_asym;
    }
    const int slot = kTransSlot[t];
    if (slot < 0) return;
    Tri T(uv, uw, vw);
    int bal = 0, unb = 0;
    for (const auto& p : kPerm) {
      const int i = p[0], j = p[1], k = p[2];
      if (T.E[i][j] && T.E[j][k] && T.E[i][k]) {
        if (T.S[i][j] ^ T.S[j][k] ^ T.S[i][k]) ++unb; else ++bal;
      }
    }
    c.sig[slot][0] += bal;
    c.sig[slot][1] += unb;
    ++c.sig[slot][unb == 0 ? 2 : (bal == 0 ? 4 : 3)];
  });
  Counts tot;
  for (const auto& c : local) {
    for (int t = 0; t < 16; ++t) tot.tri[t] += c.tri[t], tot.closed[t] += c.closed[t];
    tot.t_asym += c.t_asym, tot.t_mut += c.t_mut;
    for (int s = 0; s < 4; ++s)
      for (int q = 0; q < kSigned; ++q) tot.sig[s][q] += c.sig[s][q];
  }
  // all wedges by type, from the neighbour kinds at each centre
  int64_t wedges[16] = {0};
  const uint8_t O = kOut, I = kIn, M = kOut | kIn;
  for (int64_t u = 0; u < n; ++u) {
    const int64_t o = g.n_out[u], i = g.n_in[u], mu = g.n_mut[u];  // int64: products overflow int32
    wedges[wedge_type(O, O)] += o * (o - 1) / 2;
    wedges[wedge_type(I, I)] += i * (i - 1) / 2;
    wedges[wedge_type(O, I)] += o * i;
    wedges[wedge_type(M, O)] += mu * o;
    wedges[wedge_type(M, I)] += mu * i;
    wedges[wedge_type(M, M)] += mu * (mu - 1) / 2;
  }
  auto census = at::zeros({16}, at::kLong);
  int64_t* cs = census.data_ptr<int64_t>();
  for (int t = 0; t < 16; ++t) cs[t] = tot.tri[t] + wedges[t] - tot.closed[t];
  cs[1] = g.sum_asym + tot.t_asym;
  cs[2] = g.sum_mut + tot.t_mut;
  cs[0] = 0;  // 003: filled in by the caller
  auto sig = at::zeros({4, kSigned}, at::kLong);
  int64_t* sp = sig.data_ptr<int64_t>();
  for (int s = 0; s < 4; ++s)
    for (int q = 0; q < kSigned; ++q) sp[s * kSigned + q] = tot.sig[s][q];
  return {census, sig};
}

// A square CSR pattern with sorted, unique columns in every row, and its values, on the CPU.
// (Below parallel_work() stored entries the kernels run on one thread: on a busy machine, waking
// threads costs more than a small graph's whole census.)
void check_graph(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& values) {
  const CsrSizes s = check_csr(row_ptr, col_idx);
  TORCH_CHECK_VALUE(row_ptr.device().is_cpu() && col_idx.device().is_cpu() && values.device().is_cpu(),
                    "row_ptr, col_idx and values must be CPU tensors");
  check_values(values, s.nnz);
  check_csr_content(row_ptr, col_idx, /*n_cols=*/s.rows, /*sorted=*/true);  // square: columns in [0, n)
}

std::tuple<at::Tensor, at::Tensor> signed_triad_census_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                           const at::Tensor& values) {
  check_graph(row_ptr, col_idx, values);
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous(), values_c = values.contiguous();
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(values_c.scalar_type(), "signed_triad_census_cpu", [&] {
    out = census_impl<scalar_t>(row_ptr_c.data_ptr<int64_t>(), col_idx_c.data_ptr<int32_t>(),
                                values_c.data_ptr<scalar_t>(), row_ptr_c.numel() - 1);
  });
  return out;
}

// Every transitive semicycle (i, j, k) in triads whose type bit is set in type_mask (bit t for
// type t, 0 = 003 ... 15 = 300): nodes [S, 3] (i, j, k), CSR positions [S, 3] of the edges
// i->j, j->k, i->k, and the triad type [S]. Order is unspecified (the caller sorts).
template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> semicycles_impl(const int64_t* row_ptr, const int32_t* col_idx,
                                                               const scalar_t* val, int64_t n, int64_t mask) {
  Graph g = build_graph(row_ptr, col_idx, val, n, true);
  struct Local {
    std::vector<int64_t> nodes, pos;
    std::vector<int8_t> type;
  };
  const int threads = g.par ? kernel_threads() : 1;
  std::vector<Local> local(threads);  // per thread; the caller sorts what they found
  for_each_triangle(g, threads, [&](int tid, int64_t u, int64_t v, int64_t w, int64_t x, int64_t y, int64_t z) {
    const uint8_t uv = g.finfo[x], vw = g.finfo[y], uw = g.finfo[z];
    const int t = kTricode[tricode(uv, uw, vw)];
    if (!((mask >> t) & 1)) return;
    Tri T(uv, uw, vw);
    const int64_t node[3] = {u, v, w};
    int64_t P[3][3];  // CSR position of the edge a -> b
    P[0][1] = g.fpos_out[x], P[1][0] = g.fpos_in[x];
    P[0][2] = g.fpos_out[z], P[2][0] = g.fpos_in[z];
    P[1][2] = g.fpos_out[y], P[2][1] = g.fpos_in[y];
    Local& L = local[tid];
    for (const auto& p : kPerm) {
      const int i = p[0], j = p[1], k = p[2];
      if (T.E[i][j] && T.E[j][k] && T.E[i][k]) {
        L.nodes.insert(L.nodes.end(), {node[i], node[j], node[k]});
        L.pos.insert(L.pos.end(), {P[i][j], P[j][k], P[i][k]});
        L.type.push_back(static_cast<int8_t>(t));
      }
    }
  });
  int64_t total = 0;
  for (const auto& L : local) total += static_cast<int64_t>(L.type.size());
  auto nodes = at::empty({total, 3}, at::kLong);
  auto pos = at::empty({total, 3}, at::kLong);
  auto type = at::empty({total}, at::kChar);
  int64_t off = 0;
  for (const auto& L : local) {
    const int64_t s = static_cast<int64_t>(L.type.size());
    std::copy(L.nodes.begin(), L.nodes.end(), nodes.data_ptr<int64_t>() + 3 * off);
    std::copy(L.pos.begin(), L.pos.end(), pos.data_ptr<int64_t>() + 3 * off);
    std::copy(L.type.begin(), L.type.end(), type.data_ptr<int8_t>() + off);
    off += s;
  }
  return {nodes, pos, type};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> transitive_semicycles_cpu(const at::Tensor& row_ptr,
                                                                         const at::Tensor& col_idx,
                                                                         const at::Tensor& values,
                                                                         int64_t type_mask) {
  check_graph(row_ptr, col_idx, values);
  auto row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous(), values_c = values.contiguous();
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(values_c.scalar_type(), "transitive_semicycles_cpu", [&] {
    out = semicycles_impl<scalar_t>(row_ptr_c.data_ptr<int64_t>(), col_idx_c.data_ptr<int32_t>(),
                                    values_c.data_ptr<scalar_t>(), row_ptr_c.numel() - 1, type_mask);
  });
  return out;
}

// The edge keys src * n + dst of one randomisation: an open-addressing hash set (linear probing,
// deletion by backward shift, so no tombstones pile up over millions of swaps) in one flat array
// of at least 2m slots. std::unordered_set allocated a node per insert and cost ~5 us per swap
// at a million edges; this is a few cache misses per swap. Keys are >= 0, -1 marks an empty slot.
class EdgeKeySet {
 public:
  explicit EdgeKeySet(int64_t m) {
    uint64_t cap = 16;
    while (cap < static_cast<uint64_t>(m) * 2) cap <<= 1;
    slots_.assign(cap, -1);
    mask_ = cap - 1;
  }
  bool contains(int64_t key) const {
    for (uint64_t i = home(key);; i = (i + 1) & mask_) {
      if (slots_[i] == key) return true;
      if (slots_[i] < 0) return false;
    }
  }
  void insert(int64_t key) {  // the caller knows the key is absent
    uint64_t i = home(key);
    while (slots_[i] >= 0) i = (i + 1) & mask_;
    slots_[i] = key;
  }
  void erase(int64_t key) {  // the caller knows the key is present
    uint64_t i = home(key);
    while (slots_[i] != key) i = (i + 1) & mask_;
    // backward shift: move later keys of the probe run into the hole unless their home lies
    // cyclically in (hole, j], where they already are reachable
    for (uint64_t j = (i + 1) & mask_; slots_[j] >= 0; j = (j + 1) & mask_) {
      const uint64_t h = home(slots_[j]);
      const bool stays = (i <= j) ? (i < h && h <= j) : (i < h || h <= j);
      if (!stays) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = -1;
  }

 private:
  uint64_t home(int64_t key) const {  // splitmix64 finaliser
    uint64_t z = static_cast<uint64_t>(key) + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (z ^ (z >> 31)) & mask_;
  }
  std::vector<int64_t> slots_;
  uint64_t mask_;
};

// K independent randomisations of a directed simple graph (src[e] -> dst[e]) by
// degree-preserving swaps: n_swaps attempts each, an attempt picks two edges a->b, c->d and
// rewires them to a->d, c->b unless that makes a self-loop or a duplicate edge. Sources stay
// with their edge slot, so per-edge data (weights) can follow the slot. Deterministic per seed.
void swap_one(const int32_t* src, int32_t* dst, int64_t m, int64_t n, int64_t n_swaps, uint64_t seed) {
  if (m < 2) return;
  EdgeKeySet edges(m);
  for (int64_t e = 0; e < m; ++e) {
    const int64_t key = int64_t(src[e]) * n + dst[e];
    if (!edges.contains(key)) edges.insert(key);  // a duplicate input edge is one key, as a set holds it
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, m - 1);
  for (int64_t t = 0; t < n_swaps; ++t) {
    const int64_t a = pick(rng), b = pick(rng);
    const int64_t s1 = src[a], t1 = dst[a], s2 = src[b], t2 = dst[b];
    if (a == b || t1 == t2 || s1 == s2 || s1 == t2 || s2 == t1) continue;
    const int64_t k1 = s1 * n + t2, k2 = s2 * n + t1;
    if (edges.contains(k1) || edges.contains(k2)) continue;
    edges.erase(s1 * n + t1);
    edges.erase(s2 * n + t2);
    edges.insert(k1);
    edges.insert(k2);
    dst[a] = static_cast<int32_t>(t2);
    dst[b] = static_cast<int32_t>(t1);
  }
}

at::Tensor degree_preserving_swaps_cpu(const at::Tensor& src, const at::Tensor& dst, int64_t n, int64_t n_swaps,
                                       const at::Tensor& seeds) {
  TORCH_CHECK_TYPE(src.scalar_type() == at::kInt && dst.scalar_type() == at::kInt, "src and dst must be int32");
  TORCH_CHECK_TYPE(seeds.scalar_type() == at::kLong, "seeds must be int64, got ", seeds.scalar_type());
  TORCH_CHECK_VALUE(src.dim() == 1 && dst.dim() == 1 && src.numel() == dst.numel(),
                    "src and dst must be 1-D of equal length");
  TORCH_CHECK_VALUE(seeds.dim() == 1, "seeds must be 1-D");
  TORCH_CHECK_VALUE(n >= 0 && n <= (int64_t(1) << 31) && n_swaps >= 0,
                    "n must be in [0, 2^31] and n_swaps >= 0, got ", n, " and ", n_swaps);
  auto s = src.contiguous(), d = dst.contiguous(), sd = seeds.contiguous();
  const int64_t m = s.numel(), K = sd.numel();
  const auto nodes = [&](const at::Tensor& t, const char* name) {  // the edge keys src * n + dst
    if (m == 0) return;
    const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < n, name, " entries must be in [0, n=", n, "), got range [", lo, ", ", hi, "]");
  };
  nodes(s, "src");
  nodes(d, "dst");
  auto out = d.unsqueeze(0).repeat({K, 1}).contiguous();
  const int32_t* sp = s.data_ptr<int32_t>();
  int32_t* op = out.data_ptr<int32_t>();
  const int64_t* seed = sd.data_ptr<int64_t>();
  parallel_chunks(K, K > 1 && m * (n_swaps + 1) >= 64 * parallel_work(),
                  [&](int64_t k) { swap_one(sp, op + k * m, m, n, n_swaps, static_cast<uint64_t>(seed[k])); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_engine, CPU, m) {
  m.impl("signed_triad_census", &signed_triad_census_cpu);
  m.impl("transitive_semicycles", &transitive_semicycles_cpu);
  m.impl("degree_preserving_swaps", &degree_preserving_swaps_cpu);
}

}  // namespace sparse_engine
