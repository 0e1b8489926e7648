"""The timing helpers that `sparse-engine bench` and the benchmark scripts share."""
import itertools

from sparse_engine.runtime import timing


def test_times_of_times_each_call_after_the_warmup_and_best_of_takes_the_fastest(monkeypatch):
    clock = itertools.count()  # perf_counter ticks 0, 1, 2, ...; each call of fn adds k ticks
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    durations = iter([100, 5, 3, 7])  # the first call is the warmup and is not timed

    def fn():
        for _ in range(next(durations)):
            next(clock)

    assert timing.times_of(fn, repeat=3, warmup=1) == [6, 4, 8]  # k ticks inside, plus the t0 read
    durations = iter([5, 3, 7])
    assert timing.best_of(fn, repeat=3) == 4


def test_times_of_options_order_setup_sync_and_clock_around_each_sample():
    """setup runs untimed before each sample and warm-up call; sync before the clock starts and
    before it is read; with min_time a sample calls fn until that much time has passed."""
    events, ticks = [], itertools.count()

    def clock():
        events.append("read")
        return next(ticks)

    def fn():
        events.append("fn")
        for _ in range(4):
            next(ticks)

    times = timing.times_of(fn, repeat=2, warmup=1, setup=lambda: events.append("setup"),
                            sync=lambda: events.append("sync"), clock=clock)
    one = ["setup", "sync", "read", "fn", "sync", "read"]
    assert events == ["setup", "fn"] + one + one and times == [5, 5]

    events.clear()
    # min_time 12: each call takes 4 ticks and each read 1, so the elapsed time reads 5, 10, 15
    assert timing.times_of(fn, repeat=1, min_time=12, clock=clock) == [15 / 3]
    assert events == ["read", "fn", "read", "fn", "read", "fn", "read"]
    assert timing.best_of(fn, repeat=2, min_time=0, clock=clock) == 5
