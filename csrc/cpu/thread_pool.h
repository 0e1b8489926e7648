// The CPU kernels' own thread pool: every parallel loop of csrc/cpu runs on it (run_chunks and
// the wrappers at the end), none on OpenMP's teams. Why (docs/cpu_kernels.md, "The thread pool"):
// an OpenMP region ends in a join that waits for every thread of its team, also one whose core
// another process holds and that the OS has not run yet, so on a busy machine the caller, done
// with its share, waited up to a scheduler time slice per region; and how libgomp's idle threads
// wait (spin or sleep) is fixed by OMP_WAIT_POLICY when torch loads libgomp, so the kernels' speed
// depended on whether a script imported torch or sparse_engine first.
//
// Here a job is `chunks` pieces of work, claimed one at a time from an atomic counter by the
// calling thread and by up to threads - 1 persistent workers. The caller starts on the chunks at
// once, without waiting for any worker; the call returns when every chunk is done. A worker that
// wakes after every chunk is claimed does nothing, so the caller waits only for chunks that a
// running worker has claimed, never for a thread that has not started. Which thread runs a chunk
// is left to that race: a kernel's chunks must give the same result whichever thread runs them
// (every kernel's outputs are written by one chunk in an order fixed by the chunk alone).
//
// Waiting: a worker that finds no job spins for at most idle_spin_us() (20 us), then sleeps on a
// condition variable; the caller, out of chunks, spins for the chunks that workers hold for about
// two of its own chunks' time (at most wait_spin_us(), 50 us), then sleeps, which frees its core
// for a worker that another process's thread has preempted. Waking a sleeping worker cost 15-20 us
// of the caller's time on a 2-core VM (a futex wake and an interrupt to the idle virtual CPU), so
// back-to-back calls find it spinning instead; nothing spins longer, so an idle pool costs a busy
// machine nothing, whatever the user imported first (docs/cpu_kernels.md, "The thread pool", has
// the measurements).
//
// The job counter packs the job's generation (high 32 bits) with the next chunk (low 32 bits): a
// worker claims with a compare-and-swap that expects its job's generation, so the claim of a
// worker that slept through the end of its job (or through several jobs) fails, and it never
// touches a finished job's data (the caller's stack). A claimed chunk keeps its job alive: the
// caller returns only after every claimed chunk is counted done.
//
// Also: a call from inside a chunk (nested) or while another thread's job holds the pool (two
// Python threads at once) runs on the calling thread alone, so it never waits for the pool and
// cannot deadlock; after fork() the child starts a new pool (pthread_atfork), the parent's workers
// being gone; an exception thrown by a chunk (TORCH_CHECK) is caught on the thread that ran it,
// the job's other chunks are skipped, and the caller rethrows it once every claimed chunk is done;
// the caller's floating-point control (MXCSR: flush-to-zero, denormals-are-zero) is set on the
// workers for its chunks, so a chunk computes the same bits on any thread.
//
// Plain C++17 with pthreads, no torch: tests/kernels/thread_pool_driver.cpp drives it under
// ThreadSanitizer (tests/kernels/test_thread_pool_tsan.py).
#pragma once
#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SE_POOL_X86 1
#endif

namespace sparse_engine {
namespace pool {

// How many parallel jobs the pool ran, how many chunks its workers ran, and how many calls ran on
// their calling thread alone because another thread's job held the pool or the call came from
// inside a chunk (sparse_engine._C._pool_stats(); the tests read them).
struct Stats {
  std::atomic<int64_t> jobs{0}, worker_chunks{0}, busy{0}, nested{0}, stalls{0};
};

inline Stats& stats() {
  static Stats s;
  return s;
}

// > 0 on a pool worker, and on a caller while it runs its chunks: a parallel call there is nested.
inline thread_local int tl_depth = 0;

// Microseconds a thread spins before it sleeps: an idle worker waiting for the next job
// (SPARSE_ENGINE_POOL_SPIN_US, default kIdleSpinUs) and a caller waiting for the chunks that
// workers have claimed (SPARSE_ENGINE_POOL_WAIT_US, default kWaitSpinUs); each read once.
// docs/cpu_kernels.md has the measurements that chose the defaults.
inline constexpr int64_t kIdleSpinUs = 20;
inline constexpr int64_t kWaitSpinUs = 50;
inline int64_t env_us(const char* name, int64_t fallback) {
  const char* s = std::getenv(name);
  if (s == nullptr || *s == '\0') return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  return end != s && v >= 0 ? static_cast<int64_t>(std::min<long long>(v, 100000)) : fallback;
}
inline int64_t idle_spin_us() {
  static const int64_t us = env_us("SPARSE_ENGINE_POOL_SPIN_US", kIdleSpinUs);
  return us;
}
inline int64_t wait_spin_us() {
  static const int64_t us = env_us("SPARSE_ENGINE_POOL_WAIT_US", kWaitSpinUs);
  return us;
}

inline void cpu_relax() {
#if SE_POOL_X86
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until done() or `ns` nanoseconds have passed; returns done().
template <typename Done>
bool spin_for(int64_t ns, Done&& done) {
  if (done()) return true;
  if (ns <= 0) return false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}

using Invoke = void (*)(void* ctx, int64_t chunk, int slot);

class ThreadPool {
 public:
  static constexpr int kMaxWorkers = 255;
  static constexpr int64_t kMaxChunks = int64_t(1) << 31;  // fits the counter's low half

  // invoke(ctx, c, slot) for every c in [0, chunks) (chunks <= kMaxChunks), on the calling thread
  // (slot 0) and up to threads - 1 workers (slots 1 ... threads - 1; a slot is one thread's for
  // the whole job, so scratch indexed by it is never shared). Returns when every chunk has run;
  // rethrows the first exception a chunk threw.
  void run(int64_t chunks, int threads, Invoke invoke, void* ctx) {
    if (chunks <= 0) return;
    const int64_t want = std::min<int64_t>({static_cast<int64_t>(threads), chunks, kMaxWorkers + 1});
    if (want <= 1) return serial(chunks, invoke, ctx);
    if (tl_depth > 0) {
      stats().nested.fetch_add(1, std::memory_order_relaxed);
      return serial(chunks, invoke, ctx);
    }
    std::unique_lock<std::mutex> caller(call_, std::try_to_lock);
    if (!caller.owns_lock()) {  // another thread's job: this one on its own thread, no waiting
      stats().busy.fetch_add(1, std::memory_order_relaxed);
      return serial(chunks, invoke, ctx);
    }
    const int helpers = ensure_workers(static_cast<int>(want - 1));
    if (helpers == 0) return serial(chunks, invoke, ctx);
    stats().jobs.fetch_add(1, std::memory_order_relaxed);
    // After a stall (below), the workers leave the last quarter of the chunks to the caller for a
    // while: work it does while a preempted worker waits for its core, instead of waiting.
    const int64_t reserve = reserve_jobs_ > 0 ? chunks / 4 : 0;
    if (reserve_jobs_ > 0) --reserve_jobs_;
    Job job;
    job.invoke = invoke;
    job.ctx = ctx;
    job.chunks = chunks;
    job.reserve = reserve;
    job.helpers = helpers;
    job.control = control_word();
    note_caller_cpu(job);
    uint32_t gen;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      gen = ++gen_;
      if (gen == 0) gen = ++gen_;  // 0: no job yet
      job_ = job;
      done_.store(0, std::memory_order_relaxed);
      failed_.store(false, std::memory_order_relaxed);
      error_ = nullptr;
      next_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_relaxed);
      published_.store(gen, std::memory_order_release);
    }
    wake_.notify_all();
    ++tl_depth;
    const auto start = std::chrono::steady_clock::now();
    const int64_t ran = work(job, gen, 0);
    const int64_t took = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    --tl_depth;
    // Wait for the chunks the workers hold: spinning for about two of this job's chunks (a running
    // worker ends its chunk within that), at most wait_spin_us(); then sleeping, which frees this
    // core for a worker that another process's thread has preempted (the OS moves it here).
    const int64_t most = wait_spin_us() * 1000;
    const int64_t per_chunk = ran > 0 ? took / ran : 0;
    const int64_t spin = ran > 0 ? std::min(most, std::max<int64_t>(2000, 2 * per_chunk)) : most;
    const auto all_done = [&] { return done_.load(std::memory_order_acquire) == chunks; };
    if (!spin_for(spin, all_done)) {
      const auto waiting = std::chrono::steady_clock::now();
      {
        std::unique_lock<std::mutex> lock(mutex_);
        finished_.wait(lock, all_done);
      }
      // A stall: the caller waited for a held chunk far longer than its chunks take, the mark of a
      // worker that another process's thread preempted (a busy core): keep a reserve for a while.
      const int64_t waited =
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - waiting).count();
      if (ran > 0 && waited > std::max<int64_t>(kStallNs, 2 * per_chunk)) {
        reserve_jobs_ = kReserveJobs;
        stats().stalls.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (failed_.load(std::memory_order_acquire)) {
      std::exception_ptr error;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        std::swap(error, error_);
      }
      std::rethrow_exception(error);
    }
  }

  int workers() const { return started_.load(std::memory_order_relaxed); }

 private:
  static constexpr int64_t kStallNs = 200000;  // a wait for held chunks this long is a stall
  static constexpr int kReserveJobs = 32;       // the jobs that keep a reserve after one

  struct Job {
    Invoke invoke = nullptr;
    void* ctx = nullptr;
    int64_t chunks = 0;
    int64_t reserve = 0;    // the last `reserve` chunks are the caller's
    int helpers = 0;        // workers 0 ... helpers - 1 take part
    unsigned control = 0;   // the caller's MXCSR
    int caller_cpu = -1;    // the CPU the caller ran on when it started the job (-1: unknown)
#if defined(__linux__)
    cpu_set_t allowed;      // the caller's allowed CPUs
#endif
  };

  // Keeps this worker off the caller's CPU: a worker woken where the caller runs (the scheduler's
  // choice when no CPU is idle, e.g. beside another process's busy thread) shared that core with
  // the caller, and the job ran at one thread's speed. The worker's CPUs become the caller's
  // allowed CPUs less the caller's own, set again only when the caller's CPU changes; where that
  // leaves no CPU (one allowed CPU) the worker gets the caller's allowed CPUs as they are.
  static void keep_off(const Job& job, int& excluded) {
#if defined(__linux__)
    if (job.caller_cpu < 0 || job.caller_cpu == excluded || job.caller_cpu >= CPU_SETSIZE) return;
    excluded = job.caller_cpu;
    cpu_set_t cpus = job.allowed;
    if (CPU_ISSET(job.caller_cpu, &cpus) && CPU_COUNT(&cpus) >= 2) CPU_CLR(job.caller_cpu, &cpus);
    sched_setaffinity(0, sizeof(cpus), &cpus);
#else
    (void)job;
    (void)excluded;
#endif
  }

  // The caller's CPU, and its allowed CPUs read again when that changed (a system call then only).
  void note_caller_cpu(Job& job) {
#if defined(__linux__)
    job.caller_cpu = sched_getcpu();
    if (job.caller_cpu != last_cpu_ || std::this_thread::get_id() != last_caller_) {
      last_cpu_ = job.caller_cpu;
      last_caller_ = std::this_thread::get_id();
      CPU_ZERO(&allowed_);
      if (sched_getaffinity(0, sizeof(allowed_), &allowed_) != 0) job.caller_cpu = last_cpu_ = -1;
    }
    job.allowed = allowed_;
#else
    (void)job;
#endif
  }

  static unsigned control_word() {
#if SE_POOL_X86
    return _mm_getcsr();
#else
    return 0;
#endif
  }

  static void serial(int64_t chunks, Invoke invoke, void* ctx) {
    for (int64_t c = 0; c < chunks; ++c) invoke(ctx, c, 0);
  }

  // Starts workers up to n (the caller holds call_); returns how many there are, at most n.
  int ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int index = static_cast<int>(workers_.size());
      try {
        workers_.emplace_back([this, index] { worker_main(index); });
      } catch (const std::exception&) {  // no more threads: go on with those there are
        break;
      }
      workers_.back().detach();  // never joined: the pool lives as long as the process
      started_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    }
    return std::min(n, static_cast<int>(workers_.size()));
  }

  // Claims and runs chunks of job `gen` until none is left or another job has replaced it;
  // returns how many it ran.
  int64_t work(const Job& job, uint32_t gen, int slot) {
    const uint64_t tag = static_cast<uint64_t>(gen) << 32;
    uint64_t cur = next_.load(std::memory_order_relaxed);
    for (int64_t ran = 0;; ++ran) {
      for (;;) {
        if ((cur >> 32) != gen) return ran;  // the job is over (and maybe another one running)
        const int64_t next = static_cast<int64_t>(cur - tag);
        if (next >= job.chunks) return ran;                  // all claimed: nothing to wait for
        if (slot > 0 && next >= job.chunks - job.reserve) return ran;  // the caller's reserve
        if (next_.compare_exchange_weak(cur, cur + 1, std::memory_order_acquire, std::memory_order_relaxed)) break;
      }  // (a failed exchange reloaded cur)
      const int64_t chunk = static_cast<int64_t>(cur - tag);
      // chunk is ours: the job cannot end before it is counted done
      if (!failed_.load(std::memory_order_relaxed)) {
        try {
          job.invoke(job.ctx, chunk, slot);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (!error_) error_ = std::current_exception();
          failed_.store(true, std::memory_order_release);
        }
      }
      if (slot > 0) stats().worker_chunks.fetch_add(1, std::memory_order_relaxed);
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == job.chunks && slot > 0) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller may be about to sleep
        finished_.notify_one();
      }
      cur = next_.load(std::memory_order_relaxed);
    }
  }

  void worker_main(int index) {
    tl_depth = 1;
    uint32_t seen = 0;
    int excluded = -1;  // the caller CPU this worker keeps off
    for (;;) {
      spin_for(idle_spin_us() * 1000, [&] { return published_.load(std::memory_order_acquire) != seen; });
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return gen_ != seen; });
        seen = gen_;
        job = job_;
      }
      if (index >= job.helpers) continue;
#if SE_POOL_X86
      if (_mm_getcsr() != job.control) _mm_setcsr(job.control);
#endif
      keep_off(job, excluded);
      work(job, seen, index + 1);
    }
  }

  std::mutex call_;                    // held by the one caller whose job the pool runs
  std::mutex mutex_;                   // guards gen_, job_, error_; with the two below
  std::condition_variable wake_;       // workers: a new job
  std::condition_variable finished_;   // the caller: every chunk done
  uint32_t gen_ = 0;
  Job job_;
  std::exception_ptr error_;
  alignas(64) std::atomic<uint64_t> next_{0};  // gen << 32 | next chunk to claim
  alignas(64) std::atomic<int64_t> done_{0};   // chunks done (run or skipped) of the current job
  std::atomic<bool> failed_{false};
  alignas(64) std::atomic<uint32_t> published_{0};  // gen_, for spinning workers
  std::vector<std::thread> workers_;   // only the caller holding call_ touches it
  int reserve_jobs_ = 0;               // jobs still to keep a reserve (the caller holding call_)
  int last_cpu_ = -2;                  // the last job's caller CPU and thread (the caller holding call_)
  std::thread::id last_caller_;
#if defined(__linux__)
  cpu_set_t allowed_;                  // that caller's allowed CPUs
#endif
  std::atomic<int> started_{0};        // workers_.size(), for anyone
};

// The process's pool, made at the first parallel call. After fork() the child's pool is a new
// one: the parent's workers do not exist there, and its locks may have been held at the fork
// (the old pool is left as it is, never destroyed).
inline std::atomic<ThreadPool*> g_pool{nullptr};
inline std::mutex g_pool_making;

inline void before_fork() { g_pool_making.lock(); }
inline void after_fork_parent() { g_pool_making.unlock(); }
inline void after_fork_child() {
  g_pool.store(nullptr, std::memory_order_relaxed);
  g_pool_making.unlock();
  tl_depth = 0;
}

inline ThreadPool& instance() {
  ThreadPool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  std::lock_guard<std::mutex> lock(g_pool_making);
  p = g_pool.load(std::memory_order_relaxed);
  if (p == nullptr) {
    static const bool registered = [] {
      return pthread_atfork(before_fork, after_fork_parent, after_fork_child) == 0;
    }();
    (void)registered;
    p = new ThreadPool();  // never deleted: its workers sleep in it until the process ends
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace pool

// fn(chunk, slot) for every chunk in [0, chunks) on up to `threads` threads (the calling one
// included; 1: the calling thread alone), slot in [0, threads) naming the thread that runs the
// chunk for the whole call (scratch indexed by slot is never shared; what a slot gets depends on
// timing, so only results independent of it may use it).
template <typename F>
void run_chunks(int64_t chunks, int threads, F&& fn) {
  if (chunks <= 0) return;
  if (threads <= 1 || chunks == 1) {
    for (int64_t c = 0; c < chunks; ++c) fn(c, 0);
    return;
  }
  for (int64_t first = 0; first < chunks; first += pool::ThreadPool::kMaxChunks) {
    auto piece = [&fn, first](int64_t c, int slot) { fn(first + c, slot); };
    using Piece = decltype(piece);
    pool::instance().run(std::min(chunks - first, pool::ThreadPool::kMaxChunks), threads,
                         [](void* ctx, int64_t c, int slot) { (*static_cast<Piece*>(ctx))(c, slot); }, &piece);
  }
}

// The reduction of f(begin, end, identity) over ranges of [0, n) of at least `grain` items (at most
// 8 per thread), on up to `threads` threads of the pool, combined in range order: the result does
// not depend on the thread count when combine is associative (min, max: the index checks).
template <typename T, typename F, typename C>
T reduce_ranges(int64_t n, int64_t grain, int threads, T identity, F&& f, C&& combine) {
  if (n <= 0) return identity;
  const int64_t ranges = std::max<int64_t>(1, std::min<int64_t>((n + grain - 1) / std::max<int64_t>(grain, 1),
                                                                8 * static_cast<int64_t>(std::max(threads, 1))));
  std::vector<T> parts(static_cast<size_t>(ranges), identity);
  run_chunks(ranges, threads, [&](int64_t c, int) { parts[c] = f(n * c / ranges, n * (c + 1) / ranges, identity); });
  T out = identity;
  for (const T& p : parts) out = combine(out, p);
  return out;
}

}  // namespace sparse_engine
