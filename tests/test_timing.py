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
