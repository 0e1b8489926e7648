// Runs the persistent recurrent kernels of csrc/cuda/rnn_sequence_cuda.cu (a whole sequence in one
// cooperative launch, forward and backward; LSTM, GRU, RNN tanh/relu; float32 and float64; both
// directions) on the CPU through emu.h, whose cooperative launch keeps every block resident and
// checks every grid sync, and checks them against float64 references computed here:
//  * forward, step by step: each step's h', c' and activations from the kernel's own state of the
//    step before (so a wrong step is seen where it happens, without rounding carried over steps);
//  * backward, the whole recursion in float64 from the kernel's forward outputs: every step's gate
//    gradients (the T*B-column dG, GRU's dgx) and dh_0, dc_0;
// and that nothing is written outside the outputs. Built and run by tests/ops/test_rnn_sequence.py
// and tests/kernels/test_cuda_sanitizers.py. Arguments: the suite ("small", "full", "sanitize") and the
// emulator's seed; prints one line per case, the emulator's statistics and the outputs' hash.
#include <cstdlib>
#include <cstring>
#include <string>

#include "driver_util.h"
#include "emu_runtime.h"
#include "launchers.h"
using namespace sparse_engine;
using namespace sparse_engine::cuda;

namespace {

template <class T>
void run(CellMode mode, const char* pname, const std::vector<int64_t>& lens, int64_t H, int64_t B, int64_t NT,
         bool reverse, bool with_dy, std::mt19937& g, int split = 1) {
  const int old_split = set_rnn_sequence_split(split);
  const double rel = sizeof(T) == 4 ? 2e-5 : 1e-12;
  const int G = cell_gates(mode);
  const bool lstm = mode == CellMode::LSTM, gru = mode == CellMode::GRU;
  const int64_t HB = H * B, TB = NT * B, A = (lstm || gru) ? 4 : 0;
  Csr m = make(G * H, H, lens, g);
  const int64_t nnz = (int64_t)m.col.size();
  std::vector<T> vals(nnz);
  { std::normal_distribution<double> nd(0.0, 1.0 / std::sqrt(1.0 + nnz / double(std::max<int64_t>(1, G * H))));
    for (auto& v : vals) v = T(nd(g)); }
  Buf<T> gx(G * H * TB, 0), h0(HB, 0), c0(HB, 0), bhh(3 * H, 0);
  gx.randomize(g); h0.randomize(g, 0.5); c0.randomize(g); bhh.randomize(g, 0.3);
  const bool use_bhh = gru && H % 2 == 1;  // GRU with and without b_hh
  auto order = [&](int64_t s) { return reverse ? NT - 1 - s : s; };
  // ---- forward
  Buf<T> y(NT * HB, 0), cs(NT * HB, 0), acts(std::max<int64_t>(A, 1) * NT * HB, 0);
  cudaError_t e = launch_rnn_sequence_forward(mode, m.ptr.data(), m.col.data(), vals.data(), nnz, gx.p(), h0.p(),
                                              lstm ? c0.p() : nullptr, use_bhh ? bhh.p() : nullptr, y.p(),
                                              lstm ? cs.p() : nullptr, A ? acts.p() : nullptr, H, B, NT, reverse, kStream);
  const int before = failures;
  if (e != cudaSuccess) { printf("  FAIL forward returned %d\n", (int)e); ++failures; }
  std::vector<double> ry(NT * HB), sy(NT * HB), rc(NT * HB), sc(NT * HB), ra(std::max<int64_t>(A, 1) * NT * HB, 0.0),
      sa(std::max<int64_t>(A, 1) * NT * HB, 0.0);
  for (int64_t s = 0; s < NT; ++s) {  // each step from the kernel's own state of the step before
    const int64_t t = order(s), tp = reverse ? t + 1 : t - 1;
    auto H_ = [&](int64_t i) { return s == 0 ? (double)h0[i] : (double)y[tp * HB + i]; };
    auto C_ = [&](int64_t i) { return s == 0 ? (double)c0[i] : (double)cs[tp * HB + i]; };
    std::vector<double> pre(G * HB, 0.0), pabs(G * HB, 0.0);
    for (int64_t r = 0; r < G * H; ++r)
      for (int64_t k = m.ptr[r]; k < m.ptr[r + 1]; ++k)
        for (int64_t b = 0; b < B; ++b) {
          const double v = (double)vals[k] * H_((int64_t)m.col[k] * B + b);
          pre[r * B + b] += v; pabs[r * B + b] += std::fabs(v);
        }
    for (int64_t j = 0; j < H; ++j)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = j * B + b, at = t * HB + o;
        auto X = [&](int q) { return (double)gx[(q * H + j) * TB + t * B + b]; };
        auto S = [&](int q) { return 1.0 + pabs[q * HB + o] + std::fabs(X(q)); };
        if (lstm) {
          const double i = sig(pre[o] + X(0)), f = sig(pre[HB + o] + X(1)), gg = std::tanh(pre[2 * HB + o] + X(2)),
                       og = sig(pre[3 * HB + o] + X(3));
          rc[at] = f * C_(o) + i * gg; ry[at] = og * std::tanh(rc[at]);
          const double bound = S(0) + S(1) + S(2) + S(3) + std::fabs(C_(o));
          sc[at] = sy[at] = bound;
          const double gate[4] = {i, f, gg, og};
          for (int q = 0; q < 4; ++q) { ra[(t * 4 + q) * HB + o] = gate[q]; sa[(t * 4 + q) * HB + o] = S(q); }
        } else if (gru) {
          double p[3];
          for (int q = 0; q < 3; ++q) p[q] = pre[q * HB + o] + (use_bhh ? (double)bhh[q * H + j] : 0.0);
          const double r = sig(X(0) + p[0]), z = sig(X(1) + p[1]), n = std::tanh(X(2) + r * p[2]);
          ry[at] = n + z * (H_(o) - n);
          const double bound = S(0) + S(1) + S(2) + 3.0 + std::fabs(H_(o));
          sy[at] = bound;
          const double gate[4] = {r, z, n, p[2]}, gb[4] = {S(0) + 1, S(1) + 1, bound, S(2) + 1};
          for (int q = 0; q < 4; ++q) { ra[(t * 4 + q) * HB + o] = gate[q]; sa[(t * 4 + q) * HB + o] = gb[q]; }
        } else {
          const double v = pre[o] + X(0);
          ry[at] = mode == CellMode::RNN_TANH ? std::tanh(v) : (v > 0 ? v : 0.0);
          sy[at] = S(0);
        }
      }
  }
  check("y", y, ry, sy, rel);
  if (lstm) check("cs", cs, rc, sc, rel); else if (!cs.intact()) { printf("  FAIL cs written\n"); ++failures; }
  if (A) check("acts", acts, ra, sa, rel); else if (!acts.intact()) { printf("  FAIL acts written\n"); ++failures; }

  // ---- backward: the float64 recursion from the kernel's forward outputs
  Buf<T> dy(NT * HB, 0), dh(HB, 0), dc(HB, 0);
  dy.randomize(g); dh.randomize(g); dc.randomize(g);
  const Buf<T> dh_in = dh, dc_in = dc;  // the backward updates dh and dc in place
  std::vector<double> dh_r(HB), dc_r(HB), rG(G * H * TB, 0.0), rgx(3 * H * TB, 0.0);
  for (int64_t i = 0; i < HB; ++i) { dh_r[i] = (double)dh[i]; dc_r[i] = lstm ? (double)dc[i] : 0.0; }
  auto act = [&](int64_t t, int q, int64_t o) { return (double)acts[(t * 4 + q) * HB + o]; };
  for (int64_t s = NT - 1; s >= 0; --s) {
    const int64_t t = order(s), tp = reverse ? t + 1 : t - 1;
    std::vector<double> dGs(G * HB), direct(HB, 0.0);
    for (int64_t o = 0; o < HB; ++o) {
      const double d = dh_r[o] + (with_dy ? (double)dy[t * HB + o] : 0.0);
      if (lstm) {
        const double i = act(t, 0, o), f = act(t, 1, o), gg = act(t, 2, o), og = act(t, 3, o);
        const double c_prev = s == 0 ? (double)c0[o] : (double)cs[tp * HB + o], tc = std::tanh((double)cs[t * HB + o]);
        const double dcn = dc_r[o] + d * og * (1 - tc * tc);
        dGs[o] = dcn * gg * i * (1 - i); dGs[HB + o] = dcn * c_prev * f * (1 - f);
        dGs[2 * HB + o] = dcn * i * (1 - gg * gg); dGs[3 * HB + o] = d * tc * og * (1 - og);
        dc_r[o] = dcn * f;
      } else if (gru) {
        const double r = act(t, 0, o), z = act(t, 1, o), n = act(t, 2, o), ghn = act(t, 3, o);
        const double h_prev = s == 0 ? (double)h0[o] : (double)y[tp * HB + o];
        const double dpn = d * (1 - z) * (1 - n * n), dpr = dpn * ghn * r * (1 - r), dpz = d * (h_prev - n) * z * (1 - z);
        dGs[o] = dpr; dGs[HB + o] = dpz; dGs[2 * HB + o] = dpn * r;
        const int64_t j = o / B, b = o % B;
        rgx[j * TB + t * B + b] = dpr; rgx[(H + j) * TB + t * B + b] = dpz; rgx[(2 * H + j) * TB + t * B + b] = dpn;
        direct[o] = d * z;
      } else {
        const double hn = (double)y[t * HB + o];
        dGs[o] = mode == CellMode::RNN_TANH ? d * (1 - hn * hn) : (hn > 0 ? d : 0.0);
      }
    }
    for (int64_t r = 0; r < G * H; ++r)
      for (int64_t b = 0; b < B; ++b) rG[r * TB + t * B + b] = dGs[r * B + b];
    std::vector<double> next(direct);
    for (int64_t r = 0; r < G * H; ++r)
      for (int64_t k = m.ptr[r]; k < m.ptr[r + 1]; ++k)
        for (int64_t b = 0; b < B; ++b) next[(int64_t)m.col[k] * B + b] += (double)vals[k] * dGs[r * B + b];
    dh_r = next;
  }
  std::vector<int64_t> cp; std::vector<int32_t> cr, pm; transpose(m, cp, cr, pm);
  Buf<T> dG(G * H * TB, 0), dgx(3 * H * TB, 0);
  std::vector<T> vals_t(pm.size());
  for (size_t k = 0; k < pm.size(); ++k) vals_t[k] = vals[pm[k]];
  e = launch_rnn_sequence_backward(mode, cp.data(), cr.data(), vals_t.data(), nnz, y.p(), h0.p(),
                                   lstm ? cs.p() : nullptr, lstm ? c0.p() : nullptr, A ? acts.p() : nullptr,
                                   with_dy ? dy.p() : nullptr, dG.p(), gru ? dgx.p() : nullptr, dh.p(),
                                   lstm ? dc.p() : nullptr, H, B, NT, reverse, kStream);
  if (e != cudaSuccess) { printf("  FAIL backward returned %d\n", (int)e); ++failures; }
  // the recursion carries rounding over the steps: a bound relative to the largest magnitude
  auto bounds = [&](const std::vector<double>& ref) {
    double big = 1.0;
    for (double v : ref) big = std::max(big, std::fabs(v));
    return std::vector<double>(ref.size(), 20.0 * NT * big);
  };
  check("dG", dG, rG, bounds(rG), rel);
  check("dh0", dh, dh_r, bounds(dh_r), rel);
  if (lstm) check("dc0", dc, dc_r, bounds(dc_r), rel); else if (!dc.intact()) { printf("  FAIL dc written\n"); ++failures; }
  if (gru) check("dgx", dgx, rgx, bounds(rgx), rel); else if (!dgx.intact()) { printf("  FAIL dgx written\n"); ++failures; }
  for (const Buf<T>* b : {&y, &cs, &acts, &dG, &dgx, &dh, &dc}) hash_outputs(*b);
  // the same bits with W_hh partly staged in shared memory (a few entries a block, so most rows
  // straddle the end of the stage), not staged at all, and staged with an int32 index, as with the
  // whole matrix staged above (a uint16 index: every H here fits 16 bits)
  const int64_t entry = sizeof(T) + sizeof(int32_t);
  // (-1: the whole matrix staged with a 4-byte index, the compact 2-byte one refused)
  for (const int64_t cap : {int64_t{0}, 5 * entry, 37 * entry + 3, int64_t{-1}}) {
    const int64_t old = set_rnn_sequence_stage_bytes(cap);
    const bool old_compact = set_rnn_sequence_compact_index(cap != -1);
    Buf<T> y2(NT * HB, 0), cs2(NT * HB, 0), acts2(std::max<int64_t>(A, 1) * NT * HB, 0), dG2(G * H * TB, 0),
        dgx2(3 * H * TB, 0), dh2 = dh_in, dc2 = dc_in;
    cudaError_t e2 = launch_rnn_sequence_forward(mode, m.ptr.data(), m.col.data(), vals.data(), nnz, gx.p(), h0.p(),
                                                 lstm ? c0.p() : nullptr, use_bhh ? bhh.p() : nullptr, y2.p(),
                                                 lstm ? cs2.p() : nullptr, A ? acts2.p() : nullptr, H, B, NT, reverse,
                                                 kStream);
    if (e2 == cudaSuccess)
      e2 = launch_rnn_sequence_backward(mode, cp.data(), cr.data(), vals_t.data(), nnz, y2.p(), h0.p(),
                                        lstm ? cs2.p() : nullptr, lstm ? c0.p() : nullptr, A ? acts2.p() : nullptr,
                                        with_dy ? dy.p() : nullptr, dG2.p(), gru ? dgx2.p() : nullptr, dh2.p(),
                                        lstm ? dc2.p() : nullptr, H, B, NT, reverse, kStream);
    set_rnn_sequence_stage_bytes(old);
    set_rnn_sequence_compact_index(old_compact);
    bool same = e2 == cudaSuccess;
    auto eq = [&](const Buf<T>& a, const Buf<T>& b) {
      same = same && std::memcmp(a.v.data(), b.v.data(), a.v.size() * sizeof(T)) == 0;
    };
    eq(y, y2); eq(cs, cs2); eq(acts, acts2); eq(dG, dG2); eq(dgx, dgx2); eq(dh, dh2); eq(dc, dc2);
    if (!same) { printf("  FAIL staging %ld bytes a block changed the outputs\n", (long)cap); ++failures; }
  }
  set_rnn_sequence_split(old_split);
  printf("%s %-8s %-8s H=%-4ld B=%-3ld T=%-2ld split=%d %s%s nnz=%-6ld %s\n", sizeof(T) == 4 ? "f32" : "f64",
         kCellModeNames[static_cast<int>(mode)], pname, (long)H, (long)B, (long)NT, split,
         reverse ? "reverse" : "forward", with_dy ? "" : " (no dy)", (long)nnz, failures == before ? "ok" : "FAILED");
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!parse_args(argc, argv, args)) return 2;
  const bool full = args.full(), sanitize = args.sanitize();
  std::mt19937 g(11);  // the inputs do not depend on the emulator's seed
  auto lengths = [&](const char* kind, int G, int64_t H) {
    std::vector<int64_t> len(G * H);
    std::uniform_int_distribution<int> u(0, 9), w(0, 70);
    const std::string k(kind);
    for (auto& l : len) l = k == "zero" ? 0 : (k == "empty" ? (u(g) < 7 ? 0 : u(g)) : (k == "long" ? w(g) : u(g)));
    return len;
  };
  for (CellMode mode : {CellMode::LSTM, CellMode::GRU, CellMode::RNN_TANH, CellMode::RNN_RELU}) {
    const int G = cell_gates(mode);
    if (sanitize) {  // every mode and both directions, blocks of several units, two batch tiles
      run<float>(mode, "uniform", lengths("uniform", G, 37), 37, 3, 3, false, true, g);
      run<float>(mode, "uniform", lengths("uniform", G, 21), 21, 33, 2, true, true, g);
      run<float>(mode, "long", lengths("long", G, 21), 21, 33, 2, true, true, g, 8);  // split rows
      continue;
    }
    // units per block (1 SM: at most 8 blocks of 8 warps): 1, several; batch tiles of 32 lanes: 1, 2, 3
    for (int64_t B : {1, 3, 20}) run<float>(mode, "uniform", lengths("uniform", G, 37), 37, B, 4, false, true, g);
    run<float>(mode, "uniform", lengths("uniform", G, 37), 37, 20, 4, true, true, g);  // the reverse direction
    run<float>(mode, "uniform", lengths("uniform", G, 21), 21, 67, 2, false, true, g);
    run<float>(mode, "uniform", lengths("uniform", G, 100), 100, 5, 3, true, false, g);  // no dy: h_T only
    run<double>(mode, "uniform", lengths("uniform", G, 37), 37, 4, 5, false, true, g);
    run<double>(mode, "empty", lengths("empty", G, 45), 45, 3, 3, true, true, g);
    run<float>(mode, "zero", lengths("zero", G, 13), 13, 4, 2, false, true, g);
    run<float>(mode, "uniform", lengths("uniform", G, 1), 1, 4, 3, false, true, g);   // one hidden unit
    run<float>(mode, "uniform", lengths("uniform", G, 9), 9, 2, 1, false, true, g);   // one step
    // split rows (S entries of a row at once, 32 / S batch columns a lane's slot): rows of 0-70
    // entries, so that a slot's run has whole unrolled groups and a tail; one to three batch tiles,
    // partly filled; the rule (0: S = 2 at these rows' mean of 35 entries, 4 for the backward's
    // columns); empty rows and an empty matrix
    for (int split : {2, 4, 8}) run<float>(mode, "long", lengths("long", G, 37), 37, 20, 3, false, true, g, split);
    run<float>(mode, "long", lengths("long", G, 21), 21, 67, 2, true, true, g, 4);
    run<float>(mode, "long", lengths("long", G, 13), 13, 1, 3, false, true, g, 8);
    run<float>(mode, "long", lengths("long", G, 37), 37, 5, 3, true, false, g, 0);
    run<double>(mode, "long", lengths("long", G, 19), 19, 9, 3, false, true, g, 2);
    run<double>(mode, "empty", lengths("empty", G, 45), 45, 3, 3, true, true, g, 8);
    run<float>(mode, "zero", lengths("zero", G, 13), 13, 4, 2, false, true, g, 4);
    if (full) {
      run<float>(mode, "uniform", lengths("uniform", G, 300), 300, 33, 6, false, true, g);
      run<double>(mode, "uniform", lengths("uniform", G, 64), 64, 130, 3, true, true, g);
    }
  }
  return finish(args);
}
