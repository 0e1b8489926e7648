// A standalone driver of the CPU kernels' thread pool (csrc/cpu/thread_pool.h, no torch), built
// with -fsanitize=thread by tests/kernels/test_thread_pool_tsan.py: jobs of 1 to 3,000 chunks on
// 1 to 4 threads back to back (workers that wake after their job ended, claims that must fail),
// per-slot scratch, nested calls, two callers at once, chunks that throw. Prints "ok" and exits 0
// when every chunk ran exactly once and every result is right; ThreadSanitizer reports any race.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "thread_pool.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what, long a = 0, long b = 0) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s (%ld, %ld)\n", what, a, b);
    ++failures;
  }
}

// Every chunk once, outputs written by their chunks (plain stores, as the kernels do).
void jobs_back_to_back(int rounds) {
  for (int r = 0; r < rounds; ++r) {
    const int64_t chunks = 1 + (r * 7919) % 3000;
    const int threads = 1 + r % 4;
    std::vector<int64_t> out(chunks, -1);
    std::vector<std::atomic<int>> runs(chunks);
    sparse_engine::run_chunks(chunks, threads, [&](int64_t c, int slot) {
      out[c] = c * 3 + 1;
      runs[c].fetch_add(1, std::memory_order_relaxed);
      if (slot < 0 || slot >= threads) expect(false, "slot out of range", slot, threads);
    });
    for (int64_t c = 0; c < chunks; ++c) {
      expect(runs[c].load() == 1, "a chunk ran other than once", c, runs[c].load());
      expect(out[c] == c * 3 + 1, "a chunk's output", c, out[c]);
    }
  }
}

// Scratch per slot (what the histograms and triangle bitmaps use), summed after the call.
void slot_scratch(int rounds) {
  for (int r = 0; r < rounds; ++r) {
    const int threads = 2 + r % 3;
    const int64_t chunks = 64 + r;
    std::vector<int64_t> partial(threads, 0);
    sparse_engine::run_chunks(chunks, threads, [&](int64_t c, int slot) { partial[slot] += c; });
    int64_t total = 0;
    for (const int64_t p : partial) total += p;
    expect(total == chunks * (chunks - 1) / 2, "slot sums", total, chunks * (chunks - 1) / 2);
  }
}

// A parallel call inside a chunk runs on that chunk's thread.
void nested(int rounds) {
  for (int r = 0; r < rounds; ++r) {
    std::atomic<int64_t> inner{0};
    std::atomic<bool> same{true};
    sparse_engine::run_chunks(16, 2, [&](int64_t, int) {
      const auto me = std::this_thread::get_id();
      sparse_engine::run_chunks(8, 2, [&](int64_t, int) {
        if (std::this_thread::get_id() != me) same = false;
        inner.fetch_add(1);
      });
    });
    expect(inner.load() == 16 * 8, "nested chunks", inner.load(), 128);
    expect(same.load(), "a nested chunk ran on another thread");
  }
}

// Two callers at once: one of them gets the pool, the other runs alone; both right.
void two_callers(int rounds) {
  auto caller = [rounds](int seed) {
    for (int r = 0; r < rounds; ++r) {
      const int64_t chunks = 100 + (r + seed) % 50;
      std::vector<int64_t> out(chunks, 0);
      sparse_engine::run_chunks(chunks, 2, [&](int64_t c, int) { out[c] = c + seed; });
      for (int64_t c = 0; c < chunks; ++c) expect(out[c] == c + seed, "two callers: output", c, out[c]);
    }
  };
  std::thread a(caller, 1), b(caller, 1000);
  a.join();
  b.join();
}

// A chunk that throws: the caller gets the exception after every claimed chunk ended; the pool
// goes on.
void throwing(int rounds) {
  for (int r = 0; r < rounds; ++r) {
    const int64_t bad = (r * 37) % 200;
    bool caught = false;
    try {
      sparse_engine::run_chunks(200, 2, [&](int64_t c, int) {
        if (c == bad) throw std::runtime_error("chunk " + std::to_string(c));
      });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "chunk " + std::to_string(bad);
    }
    expect(caught, "the exception of chunk", bad);
  }
  std::atomic<int64_t> n{0};
  sparse_engine::run_chunks(500, 2, [&](int64_t, int) { n.fetch_add(1); });
  expect(n.load() == 500, "after the exceptions", n.load(), 500);
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 200;
  jobs_back_to_back(rounds);
  slot_scratch(rounds / 4 + 1);
  nested(rounds / 4 + 1);
  two_callers(rounds / 2 + 1);
  throwing(rounds / 4 + 1);
  const auto& st = sparse_engine::pool::stats();
  std::printf("jobs %lld, worker chunks %lld, busy %lld, nested %lld\n", static_cast<long long>(st.jobs.load()),
              static_cast<long long>(st.worker_chunks.load()), static_cast<long long>(st.busy.load()),
              static_cast<long long>(st.nested.load()));
  if (failures) return 1;
  std::printf("ok\n");
  return 0;
}
