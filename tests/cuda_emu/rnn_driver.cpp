// Runs the fused recurrent step kernels of csrc/cuda/rnn_step_cuda.cu (forward and backward, every
// mode, float32 and float64) on the CPU through emu.h and checks them against float64
// references computed here, including that nothing is written outside the outputs.
// The backward also runs spmm_cuda.cu's kernels (W_hh^T dG). Built and run by
// tests/ops/test_rnn_step.py and tests/kernels/test_cuda_sanitizers.py; separate from driver.cpp so the two
// can change independently. Arguments: the suite ("small", "full", "sanitize": a subset that reaches
// every kernel and mode, for tests/cuda_emu/planted_bugs.py's sanitizer stages) and the emulator's seed; the same stream, garbage workspaces and output hash
// as driver.cpp.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>
#include "driver_util.h"
#include "emu_runtime.h"
#include "launchers.h"
using namespace sparse_engine;
using namespace sparse_engine::cuda;

namespace {

template <class T>
void run(CellMode mode, const char* pname, const std::vector<int64_t>& lens, int64_t H, int64_t B, bool mis,
         std::mt19937& g, int64_t forced_cols = 0) {
  const double rel = sizeof(T) == 4 ? 2e-5 : 1e-12;
  const int G = cell_gates(mode);
  const int off = mis ? 1 : 0;
  const double dt = 0.1, tau = 0.5;
  Csr m = make(G * H, H, lens, g, forced_cols);
  const int64_t nnz = (int64_t)m.col.size(), HB = H * B;
  std::vector<T> vals(nnz);
  { std::normal_distribution<double> nd(0.0, 1.0 / std::sqrt(1.0 + nnz / double(std::max<int64_t>(1, G * H))));
    for (auto& v : vals) v = T(nd(g)); }
  Buf<T> gx(G * HB, off), h(HB, off), c(HB, off), bhh(3 * H, off);
  gx.randomize(g); h.randomize(g, 0.5); c.randomize(g); bhh.randomize(g, 0.3);
  const bool use_bhh = mode == CellMode::GRU && (H % 2 == 1);  // GRU with and without b_hh
  // ---- forward reference
  std::vector<double> pre(G * HB, 0.0), pabs(G * HB, 0.0);
  for (int64_t r = 0; r < G * H; ++r)
    for (int64_t k = m.ptr[r]; k < m.ptr[r + 1]; ++k)
      for (int64_t b = 0; b < B; ++b) {
        const double t = (double)vals[k] * (double)h[(int64_t)m.col[k] * B + b];
        pre[r * B + b] += t; pabs[r * B + b] += std::fabs(t);
      }
  const int64_t nacts = cell_saved_acts(mode);
  std::vector<double> rh(HB), rc(HB), ra(nacts * HB), sh(HB), sc(HB), sa(nacts * HB);
  const double decay = 1 - dt / tau;
  for (int64_t j = 0; j < H; ++j)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = j * B + b;
      auto P = [&](int q) { return pre[q * HB + o]; };
      auto S = [&](int q) { return 1.0 + pabs[q * HB + o] + std::fabs((double)gx[q * HB + o]); };
      if (mode == CellMode::LSTM) {
        const double i = sig(P(0) + gx[o]), f = sig(P(1) + gx[HB + o]), gg = std::tanh(P(2) + gx[2 * HB + o]),
                     og = sig(P(3) + gx[3 * HB + o]);
        rc[o] = f * (double)c[o] + i * gg; rh[o] = og * std::tanh(rc[o]);
        ra[o] = i; ra[HB + o] = f; ra[2 * HB + o] = gg; ra[3 * HB + o] = og;
        const double s = S(0) + S(1) + S(2) + S(3) + std::fabs((double)c[o]);
        sc[o] = sh[o] = s;
        for (int q = 0; q < 4; ++q) sa[q * HB + o] = S(q);
      } else if (mode == CellMode::GRU) {
        double p[3];
        for (int q = 0; q < 3; ++q) p[q] = P(q) + (use_bhh ? (double)bhh[q * H + j] : 0.0);
        const double r = sig(gx[o] + p[0]), z = sig(gx[HB + o] + p[1]), n = std::tanh(gx[2 * HB + o] + r * p[2]);
        rh[o] = n + z * ((double)h[o] - n);
        ra[o] = r; ra[HB + o] = z; ra[2 * HB + o] = n; ra[3 * HB + o] = p[2];
        const double s = S(0) + S(1) + S(2) + 3.0 + std::fabs((double)h[o]);
        sh[o] = s; sa[o] = S(0) + 1; sa[HB + o] = S(1) + 1; sa[2 * HB + o] = s; sa[3 * HB + o] = S(2) + 1;
      } else if (mode == CellMode::RNN_TANH || mode == CellMode::RNN_RELU) {
        const double v = P(0) + gx[o];
        rh[o] = mode == CellMode::RNN_TANH ? std::tanh(v) : (v > 0 ? v : 0.0);
        sh[o] = S(0);
      } else {
        const double a = std::tanh(P(0) + gx[o]);
        ra[o] = a; rh[o] = decay * (double)h[o] + dt * a;
        sa[o] = S(0); sh[o] = S(0) + std::fabs((double)h[o]);
      }
    }
  Buf<T> h2(HB, off), c2(HB, off), acts(std::max<int64_t>(nacts, 1) * HB, off);
  cudaError_t e = launch_rnn_step_forward(mode, m.ptr.data(), m.col.data(), vals.data(), gx.p(), h.p(),
                                          mode == CellMode::LSTM ? c.p() : nullptr, use_bhh ? bhh.p() : nullptr, h2.p(),
                                          mode == CellMode::LSTM ? c2.p() : nullptr, nacts ? acts.p() : nullptr, H, B, dt,
                                          tau, kStream);
  const int before = failures;
  if (e != cudaSuccess) { printf("  FAIL forward returned %d\n", (int)e); ++failures; }
  check("h_new", h2, rh, sh, rel);
  if (mode == CellMode::LSTM) check("c_new", c2, rc, sc, rel);
  if (nacts) check("acts", acts, ra, sa, rel); else if (!acts.intact()) { printf("  FAIL acts written\n"); ++failures; }
  if (mode != CellMode::LSTM && !c2.intact()) { printf("  FAIL c_new written\n"); ++failures; }

  // ---- backward, from the kernel's own forward outputs (as Python passes them)
  Buf<T> dh(HB, off), dc(HB, off);
  dh.randomize(g); dc.randomize(g);
  std::vector<double> rG(G * HB), sG(G * HB), rgx(3 * HB), sgx(3 * HB), rdc(HB), sdc(HB), rdh(HB, 0.0), sdh(HB, 0.0);
  auto A = [&](int64_t i) { return (double)acts[i]; };
  for (int64_t e2 = 0; e2 < HB; ++e2) {
    const double d = dh[e2];
    if (mode == CellMode::LSTM) {
      const double i = A(e2), f = A(HB + e2), gg = A(2 * HB + e2), o = A(3 * HB + e2), tc = std::tanh((double)c2[e2]);
      const double dct = (double)dc[e2] + d * o * (1 - tc * tc);
      rG[e2] = dct * gg * i * (1 - i); rG[HB + e2] = dct * (double)c[e2] * f * (1 - f);
      rG[2 * HB + e2] = dct * i * (1 - gg * gg); rG[3 * HB + e2] = d * tc * o * (1 - o);
      rdc[e2] = dct * f;
      const double s = 1 + std::fabs((double)dc[e2]) + std::fabs(d) * (1 + std::fabs((double)c[e2]));
      for (int q = 0; q < 4; ++q) sG[q * HB + e2] = s;
      sdc[e2] = s;
    } else if (mode == CellMode::GRU) {
      const double r = A(e2), z = A(HB + e2), n = A(2 * HB + e2), ghn = A(3 * HB + e2);
      const double dn = d * (1 - z) * (1 - n * n), dr = dn * ghn * r * (1 - r), dz = d * ((double)h[e2] - n) * z * (1 - z);
      rgx[e2] = rG[e2] = dr; rgx[HB + e2] = rG[HB + e2] = dz; rgx[2 * HB + e2] = dn; rG[2 * HB + e2] = dn * r;
      const double s = 1 + std::fabs(d) * (1 + std::fabs(ghn) + std::fabs((double)h[e2]));
      for (int q = 0; q < 3; ++q) { sG[q * HB + e2] = s; sgx[q * HB + e2] = s; }
      rdh[e2] = d * z; sdh[e2] = std::fabs(d * z);
    } else if (mode == CellMode::RNN_TANH) {
      const double y = h2[e2]; rG[e2] = d * (1 - y * y); sG[e2] = std::fabs(d);
    } else if (mode == CellMode::RNN_RELU) {
      rG[e2] = (double)h2[e2] > 0 ? d : 0.0; sG[e2] = std::fabs(d);
    } else {
      const double a = A(e2); rG[e2] = d * dt * (1 - a * a); sG[e2] = std::fabs(d);
      rdh[e2] = d * decay; sdh[e2] = std::fabs(d * decay);
    }
  }
  for (int64_t r = 0; r < G * H; ++r)
    for (int64_t k = m.ptr[r]; k < m.ptr[r + 1]; ++k)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = (int64_t)m.col[k] * B + b;
        rdh[o] += (double)vals[k] * rG[r * B + b];
        sdh[o] += std::fabs((double)vals[k]) * (std::fabs(rG[r * B + b]) + sG[r * B + b]);
      }
  std::vector<int64_t> cp; std::vector<int32_t> cr; std::vector<int32_t> pm; transpose(m, cp, cr, pm);
  int64_t max_col = 0;  // as the glue sizes the workspace: from the checked index's longest column
  for (int64_t j = 0; j < H; ++j) max_col = std::max(max_col, cp[j + 1] - cp[j]);
  const int64_t wl = rnn_step_backward_workspace_len(H, nnz, max_col, B, sizeof(T));
  std::vector<int32_t> ws(std::max<int64_t>(1, wl), 0x5a5a5a5a);  // garbage, as from cudaMalloc
  Buf<T> dG(G * HB, off), dgx(3 * HB, off), dcp(HB, off), dhp(HB, off);
  const T* hin = mode == CellMode::GRU ? h.p() : (mode == CellMode::RNN_TANH || mode == CellMode::RNN_RELU ? h2.p() : nullptr);
  e = launch_rnn_step_backward(mode, cp.data(), cr.data(), pm.data(), vals.data(), nnz, nacts ? acts.p() : nullptr,
                               mode == CellMode::LSTM ? c.p() : nullptr, mode == CellMode::LSTM ? c2.p() : nullptr, hin, dh.p(),
                               mode == CellMode::LSTM ? dc.p() : nullptr, dG.p(), mode == CellMode::GRU ? dgx.p() : nullptr,
                               mode == CellMode::LSTM ? dcp.p() : nullptr, dhp.p(), H, B, dt, tau, wl ? ws.data() : nullptr, kStream);
  if (e != cudaSuccess) { printf("  FAIL backward returned %d\n", (int)e); ++failures; }
  check("dG", dG, rG, sG, rel);
  check("dh_prev", dhp, rdh, sdh, rel);
  if (mode == CellMode::LSTM) check("dc_prev", dcp, rdc, sdc, rel); else if (!dcp.intact()) { printf("  FAIL dc_prev written\n"); ++failures; }
  if (mode == CellMode::GRU) check("dgx", dgx, rgx, sgx, rel); else if (!dgx.intact()) { printf("  FAIL dgx written\n"); ++failures; }
  // ---- the backward with W_hh's gradient (launch_rnn_step_backward_wgrad): the same outputs bit for bit,
  // and dw_t = dw0 + the sddmm of the transposed index, h_in (here h) against the kernel's dG, bit for bit
  // launch_sddmm_add's after the plain backward and within rounding of float64; one pass where the launcher
  // says it fuses, else the two kernels
  Buf<T> dw_two(nnz, off), dw_one(nnz, off), dG1(G * HB, off), dgx1(3 * HB, off), dcp1(HB, off), dhp1(HB, off);
  dw_two.randomize(g);
  for (int64_t k = 0; k < nnz; ++k) dw_one.v[off + k] = dw_two[k];
  const std::vector<T> dw_init(dw_two.v.begin() + off, dw_two.v.begin() + off + nnz);
  std::vector<double> rdw(nnz), sdw(nnz);
  for (int64_t j = 0; j < H; ++j)
    for (int64_t k = cp[j]; k < cp[j + 1]; ++k) {
      double d = dw_two[k], a = std::fabs(d);
      for (int64_t b = 0; b < B; ++b) {
        const double t = (double)h[j * B + b] * (double)dG[(int64_t)cr[k] * B + b];
        d += t; a += std::fabs(t);
      }
      rdw[k] = d; sdw[k] = a;
    }
  const int64_t wl_s = sddmm_workspace_len(H, nnz, max_col);
  std::vector<int32_t> ws2(std::max<int64_t>({1, wl, wl_s}), 0x5a5a5a5a);
  if (nnz > 0 && launch_sddmm_add(cp.data(), cr.data(), h.p(), dG.p(), dw_two.p(), H, B, nnz,
                                  wl_s ? ws2.data() : nullptr, kStream) != cudaSuccess) {
    printf("  FAIL sddmm_add returned an error\n"); ++failures;
  }
  // the backward with the gradient into fresh outputs, given the values through perm (or in column order)
  auto backward_wgrad = [&](const int32_t* perm, const T* values, Buf<T>& dGo, Buf<T>& dgxo, Buf<T>& dcpo,
                            Buf<T>& dhpo, Buf<T>& dw) {
    std::fill(ws2.begin(), ws2.end(), 0x5a5a5a5a);
    return launch_rnn_step_backward_wgrad(mode, cp.data(), cr.data(), perm, values, nnz, max_col,
                                          nacts ? acts.p() : nullptr, mode == CellMode::LSTM ? c.p() : nullptr,
                                          mode == CellMode::LSTM ? c2.p() : nullptr, hin, dh.p(),
                                          mode == CellMode::LSTM ? dc.p() : nullptr, dGo.p(),
                                          mode == CellMode::GRU ? dgxo.p() : nullptr,
                                          mode == CellMode::LSTM ? dcpo.p() : nullptr, dhpo.p(), h.p(), dw.p(), H, B,
                                          dt, tau, std::max(wl, wl_s) ? ws2.data() : nullptr, kStream);
  };
  e = backward_wgrad(pm.data(), vals.data(), dG1, dgx1, dcp1, dhp1, dw_one);
  if (e != cudaSuccess) { printf("  FAIL backward_wgrad returned %d\n", (int)e); ++failures; }
  const bool one_pass = rnn_step_wgrad_one_pass(H, nnz, max_col, B, sizeof(T), !mis, !mis);
  for (auto [what, a, b] : {std::tuple{"dG", &dG, &dG1}, {"dgx", &dgx, &dgx1}, {"dc_prev", &dcp, &dcp1},
                            {"dh_prev", &dhp, &dhp1}, {"dw_t", &dw_two, &dw_one}})
    if (a->v != b->v) { printf("  FAIL %s of the backward with the weight gradient: other bits\n", what); ++failures; }
  check("dw_t", dw_one, rdw, sdw, rel);
  // the same given the values in column order (values_t, no permutation: what a recurrence passes)
  std::vector<T> vt(nnz);
  for (int64_t k = 0; k < nnz; ++k) vt[k] = vals[pm[k]];
  Buf<T> dw_vt(nnz, off), dhp2(HB, off), dG2(G * HB, off), dgx2(3 * HB, off), dcp2(HB, off);
  for (int64_t k = 0; k < nnz; ++k) dw_vt.v[off + k] = dw_init[k];
  e = backward_wgrad(nullptr, vt.data(), dG2, dgx2, dcp2, dhp2, dw_vt);
  if (e != cudaSuccess || dhp2.v != dhp1.v || dw_vt.v != dw_one.v) {
    printf("  FAIL the backward with the weight gradient and values_t: other bits than with the permutation\n"); ++failures;
  }
  for (const Buf<T>* b : {&h2, &c2, &acts, &dG, &dgx, &dcp, &dhp, &dw_one}) hash_outputs(*b);
  int64_t max_row = 0;
  for (int64_t r = 0; r < G * H; ++r) max_row = std::max(max_row, m.ptr[r + 1] - m.ptr[r]);
  // the long columns W_hh^T dG listed: one block each, or split (a row's first slot of the split list)
  long long_cols = wl ? ws[0] : -1;
  if (const int64_t at = gather_split_list_offset(H, nnz, B, sizeof(T)); wl && at >= 0)
    for (int32_t sl = 0; sl < ws[at]; ++sl) long_cols += ws[at + 1 + sl] >= 0;
  printf("%s %-8s %-8s H=%-4ld B=%-3ld mis=%d nnz=%-6ld max row=%-4ld long cols=%ld wgrad=%s %s\n",
         sizeof(T) == 4 ? "f32" : "f64", kCellModeNames[static_cast<int>(mode)], pname, (long)H, (long)B, (int)mis,
         (long)nnz, (long)max_row, long_cols, one_pass ? "one-pass" : "two-kernels", failures == before ? "ok" : "FAILED");
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!parse_args(argc, argv, args)) return 2;
  const bool full = args.full(), sanitize = args.sanitize();
  std::mt19937 g(7);  // the inputs do not depend on the emulator's seed
  auto lengths = [&](const char* kind, int G, int64_t H) {
    std::vector<int64_t> len(G * H);
    std::uniform_int_distribution<int> u(0, 9);
    const std::string k(kind);
    for (auto& l : len) l = k == "zero" ? 0 : (k == "empty" ? (u(g) < 7 ? 0 : u(g)) : u(g));
    if (k == "long")  // rows of many 32-entry chunks, and full rows
      for (int64_t i = 0; i < G * H; i += 5) len[i] = i % 2 ? H : H / 2 + 33;
    return len;
  };
  for (int id = 0; id < kNumCellModes; ++id) {
    const CellMode mode = static_cast<CellMode>(id);
    const int G = cell_gates(mode);
    if (sanitize) {  // every mode: scalar and vector loads, three tiles (more than the lowered grid.y),
                     // long rows, float64, a misaligned state
      run<float>(mode, "uniform", lengths("uniform", G, 37), 37, 3, false, g);
      run<float>(mode, "uniform", lengths("uniform", G, 37), 37, 20, false, g);
      run<float>(mode, "uniform", lengths("uniform", G, 21), 21, 67, false, g);
      run<double>(mode, "long", lengths("long", G, 100), 100, 2, false, g);
      run<float>(mode, "uniform", lengths("uniform", G, 37), 37, 20, true, g);
      continue;
    }
    // batch widths: scalar and 16-byte loads, several lane layouts, more than one tile
    for (int64_t B : {1, 3, 20}) run<float>(mode, "uniform", lengths("uniform", G, 37), 37, B, false, g);
    if (G > 1) run<float>(mode, "uniform", lengths("uniform", G, 37), 37, 33, false, g);  // 32 lanes, 2 tiles
    run<float>(mode, "uniform", lengths("uniform", G, 21), 21, 67, false, g);  // 3 tiles: grid.y's loop
    for (int64_t B : {2, 5, 20}) run<double>(mode, "uniform", lengths("uniform", G, 37), 37, B, false, g);
    run<float>(mode, "empty", lengths("empty", G, 45), 45, 8, false, g);
    run<double>(mode, "empty", lengths("empty", G, 45), 45, 3, false, g);
    run<float>(mode, "zero", lengths("zero", G, 13), 13, 4, false, g);
    run<double>(mode, "zero", lengths("zero", G, 13), 13, 1, false, g);
    run<float>(mode, "uniform", lengths("uniform", G, 1), 1, 4, false, g);    // one hidden unit
    run<float>(mode, "uniform", lengths("uniform", G, 37), 37, 20, true, g);  // misaligned: scalar loads
    run<double>(mode, "uniform", lengths("uniform", G, 37), 37, 4, true, g);
    run<float>(mode, "long", lengths("long", G, 100), 100, 4, false, g);
    run<double>(mode, "long", lengths("long", G, 100), 100, 1, false, g);
    if (full) {
      for (int64_t B : {64, 130, 300}) run<float>(mode, "uniform", lengths("uniform", G, 37), 37, B, false, g);
      run<float>(mode, "long", lengths("long", G, 300), 300, 33, false, g);
    }
  }
  // 5 columns of 1040 / 1050 entries (> max(1024, 4 x mean)) in W_hh: W_hh^T dG takes spmm_cuda.cu's long-row
  // kernel, with more long rows than its emulated 4-block grid
  run<float>(CellMode::LSTM, "longcols", lengths("uniform", 4, 260), 260, 4, false, g, 5);
  if (!sanitize) run<double>(CellMode::GRU, "longcols", lengths("uniform", 3, 350), 350, 1, false, g, 5);
  // H x B = 9,900 elements, more than the emulated elementwise grid's 32 x 256 threads: its
  // grid-stride loop runs twice
  run<float>(CellMode::GRU, "wide", lengths("uniform", 3, 99), 99, 100, false, g);
  return finish(args);
}
