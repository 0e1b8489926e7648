// The emulator's runtime (tests only; see emu.h): every CUDA thread of a launch is a fiber with its
// own stack, all on the calling OS thread. The blocks of a grid are taken in a seeded random order,
// 2-4 of them at a time (2 + seed % 3), and whenever a thread reaches a shuffle, a barrier or an
// atomic, or starts or ends, the next thread to run is drawn at random among the runnable threads
// of all running blocks. So thread and block orders vary with the seed but repeat for the same
// seed, and a deadlock is seen exactly (threads waiting, none runnable).
//
// Built without ThreadSanitizer instrumentation even in the TSan build (its bookkeeping is not the
// kernels' memory); it tells TSan about the fibers (switches without synchronisation) and about the
// synchronisation CUDA guarantees: launch boundaries and __syncthreads.
#include "emu_runtime.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <map>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif
#if defined(EMU_TSAN)
#include <sanitizer/tsan_interface.h>
extern "C" void __tsan_ignore_thread_begin();  // in libtsan, not in its header
extern "C" void __tsan_ignore_thread_end();
#endif

namespace emu {
namespace {

// Limits of the GPUs we build for (sm_80, sm_90), and of the tests' lowered grid.y.
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockX = 1024, kMaxBlockY = 1024, kMaxBlockZ = 64;
constexpr unsigned kMaxGridX = 2147483647u;
constexpr unsigned kMaxGridYZ = SPARSE_ENGINE_MAX_GRID_Y;  // 65,535 on a GPU; lowered by the build
constexpr size_t kMaxSharedPerBlock = 48 * 1024;  // static + dynamic without an opt-in attribute
constexpr size_t kSharedPerSM = 228 * 1024;       // an SM's shared memory (sm_90), for co-residency
constexpr int kThreadsPerSM = 2048, kBlocksPerSM = 32;
constexpr size_t kStackBytes = EMU_STACK_KIB * 1024;
constexpr int kExitStatus = 86;

// ------------------------------------------------------------------ contexts
// x86-64: a hand-written switch (callee-saved registers, MXCSR and the x87 control word), about
// 10 ns; elsewhere ucontext (a system call per switch).
#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl emu_ctx_switch
  .type emu_ctx_switch, @function
emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_ctx_switch, .-emu_ctx_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
struct Context {
  void* sp = nullptr;
};
void ctx_init(Context& c, char* stack, size_t size, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15);
  auto* p = reinterpret_cast<uint64_t*>(top);
  *--p = 0;                                      // the entry's (unused) return address
  *--p = reinterpret_cast<uint64_t>(entry);      // where emu_ctx_switch's ret goes
  for (int i = 0; i < 6; ++i) *--p = 0;          // rbp rbx r12-r15
  *--p = 0x037F00001F80ull;                      // MXCSR (low 4 bytes), x87 control word
  c.sp = p;
}
inline void ctx_switch(Context& from, Context& to) { emu_ctx_switch(&from.sp, to.sp); }
#else
}  // namespace
}  // namespace emu
#include <ucontext.h>
namespace emu {
namespace {
struct Context {
  ucontext_t uc;
};
void ctx_init(Context& c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
inline void ctx_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ------------------------------------------------------------------ state
enum class State { Idle, Runnable, AtShuffle, AtBarrier, AtGridSync, Done };

struct Block;

struct Fiber {
  Context ctx;
  char* stack = nullptr;  // usable part (a guard page below it)
  ThreadVars vars{};
  Block* block = nullptr;
  int linear = 0, warp = 0, lane = 0;
  State state = State::Idle;
  uint64_t shfl_result = 0;
  const char* wait_file = nullptr;  // where it waits (shuffle or barrier)
  int wait_line = 0;
  unsigned wait_mask = 0;
#if defined(EMU_ASAN)
  void* fake_stack = nullptr;
#endif
#if defined(EMU_TSAN)
  void* tsan = nullptr;
#endif
};

struct Round {  // one shuffle of a set of lanes of a warp
  unsigned mask = 0, arrived = 0;
  int kind = 0;
  const char* file = nullptr;
  int line = 0;
  uint64_t val[32];
  int src[32];
};

struct Warp {
  unsigned exited = 0, at_barrier = 0, absent = 0;  // lane bits (absent: past the block's last thread)
  std::vector<Round*> open;
};

// A barrier of a fixed number of threads (a block's __syncthreads, a cooperative grid's sync): the
// first arrival fixes its source line, the last releases every waiting thread (wait_at).
struct Barrier {
  long arrived = 0;
  unsigned gen = 0;
  const char* file = nullptr;
  int line = 0;
  std::vector<Fiber*> waiting;
  char sync[2];  // TSan synchronisation addresses, one per generation parity
};

struct SharedVar {
  const void* tag;
  void* ptr;
  size_t bytes;
};

struct Block {
  uint3 idx{};
  int nt = 0, live = 0, exited = 0;
  int first_exited = -1;
  std::vector<Fiber*> threads;
  std::vector<Warp> warps;
  Barrier bar;  // __syncthreads
  // shared memory
  std::vector<SharedVar> shared;
  size_t shared_bytes = 0;
  void* dynamic = nullptr;  // extern __shared__: the launch's shmem bytes
};

struct Launch {
  const char* name = nullptr;   // as written at the launch site
  const char* where = nullptr;  // the launching function (with its template arguments)
  const char* pretty = nullptr; // the kernel itself, from its first thread
  dim3 grid, block;
  size_t shmem = 0;
  void (*body)(void*) = nullptr;
  void* closure = nullptr;
  std::vector<uint3> order;  // blocks, in the order they start
  size_t next = 0;
  std::vector<Block*> running;
  int live_blocks = 0, max_live = 1;
  int picks = 0;
  size_t shared_limit = 0;  // static + dynamic shared memory per block this kernel may take
  // cooperative launches (cudaLaunchCooperativeKernel): every block resident, grid_sync allowed
  bool cooperative = false;
  long total_threads = 0, exited_threads = 0;
  Barrier grid_bar;  // SE_GRID_SYNC
};

std::map<const void*, int> g_max_dynamic_shared;  // cudaFuncSetAttribute per kernel
uint64_t g_seed = 1;
cudaStream_t g_stream = nullptr;
bool g_stream_set = false;
std::mt19937_64 g_rng(1);
Launch* g_launch = nullptr;
Fiber* g_current = nullptr;  // nullptr: the host (main) context
Context g_main;
std::vector<Fiber*> g_pool;      // idle fibers
std::vector<Fiber*> g_runnable;  // runnable, not running
Stats g_stats{};
std::string g_kernels;  // kernels_launched()
size_t g_page = 4096;
#if defined(EMU_ASAN)
const void* g_main_stack_bottom = nullptr;
size_t g_main_stack_size = 0;
void* g_main_fake_stack = nullptr;
#endif
#if defined(EMU_TSAN)
void* g_main_tsan = nullptr;
char g_launch_begin, g_launch_end;  // TSan synchronisation addresses of a launch's start and end
#endif

const char* base(const char* file) {
  const char* s = strrchr(file, '/');
  return s ? s + 1 : file;
}

// The runtime's own memory accesses (its bookkeeping, and the C library calls TSan intercepts: malloc,
// memmove) are invisible to ThreadSanitizer: each entry point opens an Ignore scope. It does not hide
// the synchronisation the runtime declares (__tsan_acquire / __tsan_release).
struct Ignore {
#if defined(EMU_TSAN)
  Ignore() { __tsan_ignore_thread_begin(); }
  ~Ignore() { __tsan_ignore_thread_end(); }
#endif
};

inline void mix(uint64_t v) { g_stats.order_hash = (g_stats.order_hash ^ v) * 0x100000001b3ull; }

std::string where_am_i() {
  char buf[512];
  std::string s;
  if (g_launch) {
    snprintf(buf, sizeof buf, "\n  kernel: %s\n  launched as %s in %s\n  grid (%u,%u,%u) block (%u,%u,%u)",
             g_launch->pretty ? g_launch->pretty : "(not started)", g_launch->name, g_launch->where, g_launch->grid.x,
             g_launch->grid.y, g_launch->grid.z, g_launch->block.x, g_launch->block.y, g_launch->block.z);
    s += buf;
  }
  if (g_current) {
    const Fiber& f = *g_current;
    snprintf(buf, sizeof buf, "\n  in block (%u,%u,%u), thread %d (warp %d, lane %d)", f.vars.blockIdx.x,
             f.vars.blockIdx.y, f.vars.blockIdx.z, f.linear, f.warp, f.lane);
    s += buf;
  }
  return s;
}

}  // namespace

ThreadVars* cur = nullptr;

void fail(const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const std::string ctx = where_am_i();
  fprintf(stdout, "EMU-ERROR %s%s\n", msg, ctx.c_str());
  fflush(stdout);
  fprintf(stderr, "EMU-ERROR %s%s\n", msg, ctx.c_str());
  fflush(stderr);
  _exit(kExitStatus);
}

namespace {

// ------------------------------------------------------------------ switching
void fiber_main();

Fiber* new_fiber() {
  auto* f = new Fiber;
  const size_t total = kStackBytes + g_page;
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) fail("mmap of a %zu-byte fiber stack failed", total);
  mprotect(mem, g_page, PROT_NONE);  // a stack overflow faults instead of corrupting memory
  f->stack = static_cast<char*>(mem) + g_page;
  ctx_init(f->ctx, f->stack, kStackBytes, fiber_main);
#if defined(EMU_TSAN)
  f->tsan = __tsan_create_fiber(0);
#endif
  return f;
}

// Switches from the running context (a fiber, or the host when `from` is null) to `to` (null: host).
void switch_to(Fiber* from, Fiber* to) {
  if (from == to) return;
  if (from && to && from->block != to->block && from->state != State::Done) ++g_stats.block_switches;
  g_current = to;
  cur = to ? &to->vars : nullptr;
#if defined(EMU_TSAN)
  // between two threads of the kernel: no synchronisation (races stay visible); to and from the
  // host: the launch's start and end synchronise through g_launch_begin / g_launch_end instead
  __tsan_switch_to_fiber(to ? to->tsan : g_main_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(EMU_ASAN)
  void** save = from ? &from->fake_stack : &g_main_fake_stack;
  if (to)
    __sanitizer_start_switch_fiber(save, to->stack, kStackBytes);
  else
    __sanitizer_start_switch_fiber(save, g_main_stack_bottom, g_main_stack_size);
#endif
  ctx_switch(from ? from->ctx : g_main, to ? to->ctx : g_main);
#if defined(EMU_ASAN)
  // back in `from`
  __sanitizer_finish_switch_fiber(from ? from->fake_stack : g_main_fake_stack, nullptr, nullptr);
#endif
}

[[noreturn]] void deadlock() {
  std::string s = "deadlock: threads wait and none can run. Waiting:";
  int shown = 0;
  for (Block* b : g_launch->running)
    for (Fiber* f : b->threads) {
      if (shown == 8) break;
      if (f->state != State::AtShuffle && f->state != State::AtBarrier && f->state != State::AtGridSync) continue;
      char buf[256];
      snprintf(buf, sizeof buf, "\n    block (%u,%u,%u) thread %d at %s %s:%d", b->idx.x, b->idx.y, b->idx.z, f->linear,
               f->state == State::AtShuffle ? "a shuffle" : f->state == State::AtBarrier ? "__syncthreads" : "a grid sync",
               base(f->wait_file), f->wait_line);
      s += buf;
      ++shown;
    }
  g_current = nullptr;
  fail("%s", s.c_str());
}

// Runs another thread: a random runnable one (possibly `self` again when it is runnable), or the host
// when the launch is over; a deadlock when threads wait but none can run.
void reschedule(Fiber* self) {
  Fiber* next = nullptr;
  if (!g_runnable.empty()) {
    const size_t i = g_rng() % g_runnable.size();
    next = g_runnable[i];
    g_runnable[i] = g_runnable.back();
    g_runnable.pop_back();
    if (g_launch->picks < 32) {
      mix(static_cast<uint64_t>(next->linear) << 32 | next->vars.blockIdx.x);
      ++g_launch->picks;
    }
  } else if (g_launch->live_blocks > 0) {
    deadlock();
  }
  switch_to(self, next);
}

void make_runnable(Fiber* f) {
  f->state = State::Runnable;
  g_runnable.push_back(f);
}

void admit_block() {
  Launch& L = *g_launch;
  const uint3 idx = L.order[L.next++];
  mix(static_cast<uint64_t>(idx.x) | static_cast<uint64_t>(idx.y) << 21 | static_cast<uint64_t>(idx.z) << 42);
  auto* b = new Block;
  b->idx = idx;
  b->nt = static_cast<int>(L.block.x * L.block.y * L.block.z);
  b->live = b->nt;
  b->warps.resize((b->nt + 31) / 32);
  if (b->nt % 32) b->warps.back().absent = ~0u << (b->nt % 32);
  for (int t = 0; t < b->nt; ++t) {
    Fiber* f;
    if (g_pool.empty()) {
      f = new_fiber();
    } else {
      f = g_pool.back();
      g_pool.pop_back();
    }
    f->block = b;
    f->linear = t;
    f->warp = t / 32;
    f->lane = t % 32;
    f->vars.threadIdx = uint3{static_cast<unsigned>(t) % L.block.x, (static_cast<unsigned>(t) / L.block.x) % L.block.y,
                              static_cast<unsigned>(t) / (L.block.x * L.block.y)};
    f->vars.blockIdx = idx;
    f->vars.blockDim = L.block;
    f->vars.gridDim = L.grid;
    b->threads.push_back(f);
    make_runnable(f);
  }
  L.running.push_back(b);
  ++L.live_blocks;
  L.max_live = std::max(L.max_live, L.live_blocks);
  ++g_stats.blocks;
  g_stats.threads += b->nt;
}

void retire_block(Block* b) {
  for (SharedVar& v : b->shared) free(v.ptr);
  free(b->dynamic);
  for (Fiber* f : b->threads) {
    f->state = State::Idle;
    f->block = nullptr;
    g_pool.push_back(f);
  }
  auto& running = g_launch->running;
  running.erase(std::find(running.begin(), running.end(), b));
  delete b;
  --g_launch->live_blocks;
  if (g_launch->next < g_launch->order.size()) admit_block();
}


// The end of a thread's kernel: no lane of its warp may wait for it at a shuffle, and no thread of its
// block at a barrier (it will never get there).
void thread_exit(Fiber* f) {
  Block* b = f->block;
  Warp& w = b->warps[f->warp];
  for (Round* r : w.open)
    if (r->mask >> f->lane & 1)
      fail("thread returns while lanes 0x%08x of its warp wait for it at the shuffle at %s:%d (mask 0x%08x)",
           r->arrived, base(r->file), r->line, r->mask);
  if (b->bar.arrived > 0)
    fail("thread returns while %d threads of its block wait at __syncthreads at %s:%d: a barrier must be reached "
         "by every thread of the block",
         b->bar.arrived, base(b->bar.file), b->bar.line);
  if (g_launch->grid_bar.arrived > 0)
    fail("thread returns while %ld threads of the grid wait at the grid sync at %s:%d: a grid sync must be reached by "
         "every thread of every block",
         g_launch->grid_bar.arrived, base(g_launch->grid_bar.file), g_launch->grid_bar.line);
  ++g_launch->exited_threads;
  w.exited |= 1u << f->lane;
  if (b->first_exited < 0) b->first_exited = f->linear;
  ++b->exited;
  f->state = State::Done;
#if defined(EMU_TSAN)
  __tsan_release(&g_launch_end);
#endif
  if (--b->live == 0) retire_block(b);  // may admit the next block, whose threads may include f
}

void fiber_main() {
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  for (;;) {
    Fiber* self = g_current;
#if defined(EMU_TSAN)
    __tsan_acquire(&g_launch_begin);
#endif
    g_launch->body(g_launch->closure);
    Ignore ignore;
    thread_exit(self);
    // f is back in the pool, or already running as a thread of the next block (then reschedule may
    // pick it and return here at once)
    reschedule(self);
  }
}

}  // namespace

// ------------------------------------------------------------------ kernel-side API
void yield() {
  Ignore ignore;
  Fiber* f = g_current;
  if (!f) return;
  make_runnable(f);
  reschedule(f);
}

void kernel_entry(const char* pretty, int max_threads, int min_blocks) {
  Ignore ignore;
  Launch& L = *g_launch;
  if (!L.pretty) L.pretty = pretty;
  const unsigned nt = L.block.x * L.block.y * L.block.z;
  if (max_threads > 0 && nt > static_cast<unsigned>(max_threads))
    fail("launched with %u threads per block, more than its __launch_bounds__(%d) (a GPU refuses the launch)", nt,
         max_threads);
  (void)min_blocks;
  yield();  // threads start in a random order
}

void* shared_alloc(const void* tag, size_t bytes) {
  Ignore ignore;
  Fiber* f = g_current;
  if (!f) fail("__shared__ variable used outside a kernel");
  Block& b = *f->block;
  for (const SharedVar& v : b.shared)
    if (v.tag == tag) return v.ptr;
  b.shared_bytes += bytes;
  if (b.shared_bytes + g_launch->shmem > g_launch->shared_limit)
    fail("%zu bytes of static and %zu of dynamic shared memory per block, more than %zu (cudaFuncSetAttribute "
         "raises the 48 KiB default up to %zu)", b.shared_bytes, g_launch->shmem, g_launch->shared_limit,
         kMaxSharedOptin);
  void* p = malloc(bytes ? bytes : 1);
  memset(p, 0xff, bytes);  // uninitialised shared memory: NaN for floats (not a write by this thread)
  b.shared.push_back({tag, p, bytes});
  return p;
}

uint64_t shuffle(unsigned mask, uint64_t bits, int arg, int width, int kind, const char* file, int line) {
  Ignore ignore;
  Fiber* f = g_current;
  if (!f) fail("shuffle outside a kernel");
  const char* what = kind == 0 ? "__shfl_sync" : "__shfl_xor_sync";
  Warp& w = f->block->warps[f->warp];
  const int lane = f->lane;
  if (width <= 0 || width > 32 || (width & (width - 1)))
    fail("%s at %s:%d with width %d (a power of two up to 32)", what, base(file), line, width);
  if (!(mask >> lane & 1))
    fail("%s at %s:%d: lane %d calls it with mask 0x%08x, which does not name it", what, base(file), line, lane, mask);
  int src;
  if (kind == 0) {
    src = (lane / width) * width + ((arg % width) + width) % width;
  } else {
    src = lane ^ arg;
    if (arg < 0 || arg > 31 || src / width > lane / width) src = lane;  // a later group: its own value
  }
  if (!(mask >> src & 1) || (w.absent >> src & 1))
    fail("%s at %s:%d: lane %d reads lane %d, which mask 0x%08x does not name (an undefined value on a GPU)", what,
         base(file), line, lane, src, mask);
  Round* r = nullptr;
  for (Round* o : w.open)
    if (o->mask >> lane & 1) {
      r = o;
      break;
    }
  if (r) {
    if (r->mask != mask || r->kind != kind || r->line != line || strcmp(r->file, file) != 0)
      fail("divergent shuffle: lane %d at %s %s:%d (mask 0x%08x) while lanes 0x%08x of its warp wait at %s %s:%d (mask "
           "0x%08x)",
           lane, what, base(file), line, mask, r->arrived, r->kind == 0 ? "__shfl_sync" : "__shfl_xor_sync",
           base(r->file), r->line, r->mask);
  } else {
    if (mask & w.exited)
      fail("%s at %s:%d (mask 0x%08x): lanes 0x%08x it names have returned", what, base(file), line, mask,
           mask & w.exited);
    if (mask & w.at_barrier)
      fail("%s at %s:%d (mask 0x%08x): lanes 0x%08x it names wait at __syncthreads at %s:%d instead", what,
           base(file), line, mask, mask & w.at_barrier, base(f->block->bar.file), f->block->bar.line);
    for (Round* o : w.open)
      if (o->arrived & mask)
        fail("%s at %s:%d (mask 0x%08x): lanes 0x%08x it names wait at another shuffle, at %s:%d (mask 0x%08x)", what,
             base(file), line, mask, o->arrived & mask, base(o->file), o->line, o->mask);
    r = new Round;
    r->mask = mask;
    r->kind = kind;
    r->file = file;
    r->line = line;
    w.open.push_back(r);
  }
  r->val[lane] = bits;
  r->src[lane] = src;
  r->arrived |= 1u << lane;
  const unsigned need = mask & ~w.absent;
  if ((r->arrived & need) == need) {  // the last lane: every lane gets its value
    const auto& threads = f->block->threads;
    for (int l = 0; l < 32; ++l) {
      if (!(need >> l & 1)) continue;
      Fiber* t = threads[f->warp * 32 + l];
      t->shfl_result = r->val[r->src[l]];
      if (t != f) make_runnable(t);
    }
    w.open.erase(std::find(w.open.begin(), w.open.end(), r));
    delete r;
    make_runnable(f);
    reschedule(f);
  } else {
    f->state = State::AtShuffle;
    f->wait_file = file;
    f->wait_line = line;
    f->wait_mask = mask;
    reschedule(f);
  }
  return f->shfl_result;
}

// Thread f arrives at `bar` (at file:line) of `total` threads: the last one releases them all (and
// calls on_release first), the others wait in `waiting`. ThreadSanitizer sees the barrier as
// synchronisation: every arrival releases, every departure acquires.
template <typename OnRelease>
void wait_at(Barrier& bar, Fiber* f, const char* file, int line, long total, State waiting, OnRelease on_release) {
  if (bar.arrived == 0) {
    bar.file = file;
    bar.line = line;
  }
  const unsigned gen = bar.gen;
#if defined(EMU_TSAN)
  __tsan_release(&bar.sync[gen & 1]);
#endif
  if (++bar.arrived == total) {  // the last thread: release them all
    for (Fiber* t : bar.waiting) make_runnable(t);
    bar.waiting.clear();
    on_release();
    bar.arrived = 0;
    ++bar.gen;
    make_runnable(f);
  } else {
    f->state = waiting;
    f->wait_file = file;
    f->wait_line = line;
    bar.waiting.push_back(f);
  }
  reschedule(f);
#if defined(EMU_TSAN)
  __tsan_acquire(&bar.sync[gen & 1]);
#endif
}

void syncthreads(const char* file, int line) {
  Ignore ignore;
  Fiber* f = g_current;
  if (!f) fail("__syncthreads outside a kernel");
  Block& b = *f->block;
  Warp& w = b.warps[f->warp];
  for (Round* r : w.open)
    if (r->mask >> f->lane & 1)
      fail("__syncthreads at %s:%d while lanes 0x%08x of its warp wait for this thread at the shuffle at %s:%d (mask "
           "0x%08x): a shuffle in divergent code",
           base(file), line, r->arrived, base(r->file), r->line, r->mask);
  if (b.exited > 0)
    fail("__syncthreads at %s:%d after %d threads of the block returned (thread %d first): a barrier must be reached "
         "by every thread of the block",
         base(file), line, b.exited, b.first_exited);
  if (b.bar.arrived > 0 && (b.bar.line != line || strcmp(b.bar.file, file) != 0))
    fail("__syncthreads at %s:%d while %ld threads of the block wait at the one at %s:%d (a barrier in divergent code)",
         base(file), line, b.bar.arrived, base(b.bar.file), b.bar.line);
  w.at_barrier |= 1u << f->lane;
  wait_at(b.bar, f, file, line, b.nt, State::AtBarrier, [&] {
    for (Warp& x : b.warps) x.at_barrier = 0;
  });
}

void grid_sync(const char* file, int line) {
  Ignore ignore;
  Fiber* f = g_current;
  if (!f) fail("a grid sync outside a kernel");
  Launch& L = *g_launch;
  if (!L.cooperative)
    fail("a grid sync at %s:%d in a launch that is not cooperative: its blocks are not all resident at once, and the "
         "waiting ones would deadlock a GPU (launch with cudaLaunchCooperativeKernel)", base(file), line);
  Block& b = *f->block;
  for (Round* r : b.warps[f->warp].open)
    if (r->mask >> f->lane & 1)
      fail("grid sync at %s:%d while lanes 0x%08x of its warp wait for this thread at the shuffle at %s:%d", base(file),
           line, r->arrived, base(r->file), r->line);
  if (b.bar.arrived > 0)
    fail("grid sync at %s:%d while %ld threads of its block wait at __syncthreads at %s:%d", base(file), line,
         b.bar.arrived, base(b.bar.file), b.bar.line);
  if (L.exited_threads > 0)
    fail("grid sync at %s:%d after %ld threads of the grid returned: a grid sync must be reached by every thread of "
         "every block", base(file), line, L.exited_threads);
  if (L.grid_bar.arrived > 0 && (L.grid_bar.line != line || strcmp(L.grid_bar.file, file) != 0))
    fail("grid sync at %s:%d while %ld threads of the grid wait at the one at %s:%d (a grid sync in divergent code)",
         base(file), line, L.grid_bar.arrived, base(L.grid_bar.file), L.grid_bar.line);
  wait_at(L.grid_bar, f, file, line, L.total_threads, State::AtGridSync, [] {});
}

void* dynamic_shared() {
  Ignore ignore;
  Fiber* f = g_current;
  if (!f) fail("extern __shared__ memory used outside a kernel");
  Block& b = *f->block;
  if (!b.dynamic) {
    b.dynamic = malloc(g_launch->shmem ? g_launch->shmem : 1);
    memset(b.dynamic, 0xff, g_launch->shmem);  // uninitialised: NaN for floats
  }
  return b.dynamic;
}

void set_max_dynamic_shared(const void* kernel, int bytes) {
  Ignore ignore;
  if (bytes < 0 || static_cast<size_t>(bytes) > kMaxSharedOptin)
    fail("cudaFuncSetAttribute(MaxDynamicSharedMemorySize, %d): at most %zu on the device", bytes, kMaxSharedOptin);
  g_max_dynamic_shared[kernel] = bytes;
}

int blocks_per_sm(int threads, size_t shmem) {
  if (threads <= 0) return 0;
  const size_t by_shared = kSharedPerSM / (shmem + 1024);  // 1 KiB reserved per block, as on sm_80 / sm_90
  return static_cast<int>(std::min<size_t>({static_cast<size_t>(kThreadsPerSM / threads), by_shared,
                                            static_cast<size_t>(kBlocksPerSM)}));
}

void check_stream(const char* what, cudaStream_t stream) {
  Ignore ignore;
  if (g_stream_set && stream != g_stream)
    fail("%s on stream %p, not the caller's stream %p", what, static_cast<void*>(stream),
         static_cast<void*>(g_stream));
}

void run_launch(const char* name, const char* where, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                void (*body)(void*), void* closure, bool cooperative, const void* kernel) {
  Ignore ignore;
  if (g_current) fail("a kernel launch inside a kernel");
  Launch L;
  L.name = name;
  L.where = where;
  L.grid = grid;
  L.block = block;
  L.shmem = shmem;
  L.body = body;
  L.closure = closure;
  L.cooperative = cooperative;
  const auto optin = g_max_dynamic_shared.find(kernel);
  L.shared_limit = std::max(kMaxSharedPerBlock, optin == g_max_dynamic_shared.end() ? size_t(0) : size_t(optin->second));
  g_launch = &L;
  const unsigned long long nt = 1ull * block.x * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    fail("an empty grid or block: invalid configuration on a GPU");
  if (nt > kMaxThreadsPerBlock || block.x > kMaxBlockX || block.y > kMaxBlockY || block.z > kMaxBlockZ)
    fail("%llu threads per block (%u x %u x %u): at most %u, and (%u, %u, %u) per dimension", nt, block.x, block.y,
         block.z, kMaxThreadsPerBlock, kMaxBlockX, kMaxBlockY, kMaxBlockZ);
  if (grid.x > kMaxGridX || grid.y > kMaxGridYZ || grid.z > kMaxGridYZ)
    fail("grid (%u, %u, %u): grid.x at most %u, grid.y and grid.z at most %u here (SPARSE_ENGINE_MAX_GRID_Y)", grid.x,
         grid.y, grid.z, kMaxGridX, kMaxGridYZ, kMaxGridYZ);
  if (shmem > L.shared_limit)
    fail("%zu bytes of dynamic shared memory, more than %zu (cudaFuncSetAttribute raises the 48 KiB default up to %zu)",
         shmem, L.shared_limit, kMaxSharedOptin);
  check_stream("kernel launch", stream);
  ++g_stats.launches;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) L.order.push_back(uint3{x, y, z});
  std::shuffle(L.order.begin(), L.order.end(), g_rng);
  int at_once = 2 + static_cast<int>(g_seed % 3);
  if (cooperative) {  // every block resident from the start; a GPU refuses a grid larger than what fits
    const long fits = blocks_per_sm(static_cast<int>(nt), shmem);  // x 1 SM
    if (static_cast<long>(L.order.size()) > fits)
      fail("a cooperative launch of %zu blocks, more than the %ld that fit on the device at once "
           "(cudaErrorCooperativeLaunchTooLarge: size the grid with cudaOccupancyMaxActiveBlocksPerMultiprocessor)",
           L.order.size(), fits);
    at_once = static_cast<int>(L.order.size());
    L.total_threads = static_cast<long>(L.order.size()) * static_cast<long>(nt);
  }
#if defined(EMU_TSAN)
  __tsan_release(&g_launch_begin);
#endif
  for (int i = 0; i < at_once && L.next < L.order.size(); ++i) admit_block();
  reschedule(nullptr);  // back here when every block has finished
  if (!g_runnable.empty() || L.live_blocks != 0) fail("emulator: launch ended with threads left");
  // the kernel's own name, from its first thread ("void ns::name(args) [with ...]"): what kernels_launched lists
  std::string kernel_name = L.pretty ? std::string(L.pretty) : std::string(name);
  kernel_name = kernel_name.substr(0, kernel_name.find('('));
  kernel_name = kernel_name.substr(kernel_name.find_last_of(": ") + 1);
  kernel_name = kernel_name.substr(0, kernel_name.find('<'));
  if (("," + g_kernels + ",").find("," + kernel_name + ",") == std::string::npos)
    g_kernels += (g_kernels.empty() ? "" : ",") + kernel_name;
#if defined(EMU_TSAN)
  __tsan_acquire(&g_launch_end);
#endif
  g_stats.max_live_blocks = std::max(g_stats.max_live_blocks, L.max_live);
  g_launch = nullptr;
}

void configure(uint64_t seed, cudaStream_t stream) {
  Ignore ignore;
  g_seed = seed;
  g_rng.seed(seed);
  g_stream = stream;
  g_stream_set = true;
  g_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
#if defined(EMU_ASAN)
  pthread_attr_t attr;  // the host thread's stack, for switches back to it
  void* addr = nullptr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &addr, &g_main_stack_size);
    pthread_attr_destroy(&attr);
  }
  g_main_stack_bottom = addr;
#endif
#if defined(EMU_TSAN)
  g_main_tsan = __tsan_get_current_fiber();
#endif
}

Stats stats() { return g_stats; }

const char* kernels_launched() { return g_kernels.c_str(); }

}  // namespace emu
