"""What a compiled plan hands back and how it splits big elementwise steps.

Outputs: a result the plan alone owns (a ``fresh`` or ``out_buffer`` step's new buffer) is
handed over as it is; anything else (an argument, a constant, a view of either or of another
output, a slot returned twice) is copied. Checked from the user's side: mutating one returned
array must change no other returned array, no argument, and no later call's result.

Threads: a big elementwise step is split over ``threads_that_pay`` threads, decided at run time
from the measured free cores (or fixed by ``SHAX_PLAN_THREADS``); the result is the same
whatever the count.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from test_properties import SETTINGS, drawn, programs

import shax_core as sx
import shax_core.numpy as snp
from shax_core import _evaluate as ev
from shax_core.ir import ShaxError


def _mark(a: np.ndarray) -> None:
    """Change every element of a returned array in place."""
    if a.size:
        a[...] = (a + 1.0) if a.dtype.kind == "f" else np.logical_not(a)


def assert_outputs_independent(exe, args) -> None:
    """Mutating any one output leaves the other outputs, the arguments and the next call's
    results unchanged."""
    kept_args = [a.copy() for a in args]
    want = [o.copy() for o in exe(*args)]
    for k in range(len(want)):
        outs = exe(*args)
        _mark(outs[k])
        for j, (o, w) in enumerate(zip(outs, want, strict=True)):
            if j != k:
                np.testing.assert_array_equal(o, w, err_msg=f"output {j} changed with {k}")
        for a, kept in zip(args, kept_args, strict=True):
            np.testing.assert_array_equal(a, kept, err_msg=f"an argument changed with {k}")
    for o, w in zip(exe(*args), want, strict=True):
        np.testing.assert_array_equal(o, w, err_msg="a later call changed")


ALIASES = """def f(a :: f32[3, 4], b :: f32[4, 5]) =
  let c = dot a b
      t = transpose [1, 0] c
      s = reduce_sum [1] c
      z = reshape [4, 3] a
      k = fromList [5] [1.0, 2.0, 3.0, 4.0, 5.0]
      kb = broadcast [1] [3, 5] k
      e = add c kb
      v = transpose [1, 0] e
  in [c, c, t, s, a, z, k, e, v, kb]"""


def test_outputs_alias_nothing_and_fresh_results_are_not_copied():
    exe = sx.compile(sx.parse(ALIASES))
    # c (first time), s and e are new buffers only the plan holds: handed over as they are;
    # the second c, the views t, z, v and kb, the argument a and the constant k are copied
    assert exe.out_copy == [False, True, True, False, True, True, True, False, True, True]
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=(4, 5)).astype(np.float32)
    outs = exe(a, b)
    assert outs[0] is not outs[1] and not np.shares_memory(outs[0], outs[1])
    assert not np.shares_memory(outs[0], outs[2]) and not np.shares_memory(outs[4], a)
    assert_outputs_independent(exe, [a, b])


def test_an_output_not_copied_costs_no_extra_peak_bytes():
    exe = sx.compile(sx.parse("def f(a :: f32[8, 8], b :: f32[8, 8]) = let c = dot a b in [c]"))
    assert exe.out_copy == [False]
    assert exe.peak_bytes == 3 * 8 * 8 * 4  # a, b and c; no copy of c


def test_gradients_are_handed_over_unaliased():
    def loss(w, b, x):
        return snp.sum(snp.tanh(x @ w + b) ** 2)

    rng = np.random.default_rng(1)
    w, b, x = (rng.normal(size=s).astype(np.float32) for s in [(6, 4), (4,), (5, 6)])
    exe = sx.compile(sx.vjp_program(sx.trace(loss, w, b, x), wrt=[0, 1]))
    assert not all(exe.out_copy)  # the weight gradient (a matmul) is not copied
    assert_outputs_independent(exe, [w, b, x, np.ones((), np.float32)])


@settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 25))
@given(programs())
def test_random_programs_outputs_are_independent(case):
    program, args, _ = drawn(case)
    exe = sx.compile(program)
    assert_outputs_independent(exe, args)
    dup = sx.compile(
        program.__class__(program.name, program.params, program.eqns, program.outs * 2)
    )
    assert_outputs_independent(dup, args)


@settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 15))
@given(programs(scalar_output=True))
def test_random_gradients_outputs_are_independent(case):
    program, args, _ = drawn(case)
    exe = sx.compile(sx.vjp_program(program))
    assert_outputs_independent(exe, [*args, np.ones(())])


# ---------------------------------------------------------------------------------------------
# threads for big elementwise steps


def test_thread_setting():
    assert ev.thread_setting(None) is None
    assert ev.thread_setting("auto") is None and ev.thread_setting(" ") is None
    assert ev.thread_setting("1") == 1 and ev.thread_setting("3") == 3
    assert ev.thread_setting("100") == ev.MAX_THREADS
    for bad in ["0", "-2", "two", "1.5"]:
        with pytest.raises(ShaxError, match="SHAX_PLAN_THREADS"):
            ev.thread_setting(bad)


def test_threads_pay_only_for_free_cores():
    assert ev.threads_that_pay(0.2, 2) == 1  # loaded machine: this process gets < 1 core
    assert ev.threads_that_pay(1.0, 2) == 1  # only the core this thread runs on
    assert ev.threads_that_pay(1.3, 2) == 1
    assert ev.threads_that_pay(1.8, 2) == 2  # one core idle beside ours
    assert ev.threads_that_pay(2.0, 2) == 2
    assert ev.threads_that_pay(7.0, 2) == 2  # never more than the plan's most
    assert ev.threads_that_pay(3.6, 8) == 4


def test_the_meter_measures_once_per_interval():
    free, calls, now = [2.0], [], [0.0]

    def measure():
        calls.append(now[0])
        return free[0]

    meter = ev.CoreMeter(2, measure=measure, clock=lambda: now[0])
    assert meter.threads() == 2
    free[0] = 0.5
    now[0] = ev.LOAD_SAMPLE_S / 2
    assert meter.threads() == 2 and len(calls) == 1  # still trusted
    now[0] = ev.LOAD_SAMPLE_S
    assert meter.threads() == 1 and len(calls) == 2


def test_free_cores_is_a_share_of_this_process_cores():
    meter = ev.FreeCores()
    np.sin(np.ones(1 << 16))  # some interval to measure
    for _ in range(2):
        free = meter.free()
        assert 0.0 <= free <= meter.cores + 1.0


BIG = ev.PARALLEL_MIN_ELEMENTS + 3  # not a multiple of any chunk count
CHAIN = f"""def f(a :: f32[{BIG}], b :: f32[{BIG}]) =
  let x = mul a b
      y = sin x
      w = add y a
      z = gt w a
  in [w, z]"""


def _big_args():
    rng = np.random.default_rng(2)
    return list(rng.normal(size=(2, BIG)).astype(np.float32))


def test_results_are_identical_for_any_thread_count(monkeypatch):
    args = _big_args()
    results = {}
    monkeypatch.setattr(ev, "_cores", lambda: 2)
    for setting in ["1", "2", "3"]:
        monkeypatch.setenv("SHAX_PLAN_THREADS", setting)
        exe = sx.compile(sx.parse(CHAIN))
        assert exe.parallel_steps == (0 if setting == "1" else 4)
        results[setting] = exe(*args)
    # auto: the injected measurement decides at run time, in the same plan
    monkeypatch.delenv("SHAX_PLAN_THREADS")
    free = [2.0]
    monkeypatch.setattr(
        ev,
        "_meter",
        ev.CoreMeter(2, measure=lambda: free[0], clock=iter(range(0, 10**6, 10)).__next__),
    )
    exe = sx.compile(sx.parse(CHAIN))
    assert exe.parallel_steps == 4 and exe.in_place_steps > 0
    results["auto, idle"] = exe(*args)
    free[0] = 0.4
    results["auto, loaded"] = exe(*args)
    assert ev._meter.threads() == 1
    want = [np.sin(args[0] * args[1]) + args[0]]
    want.append(want[0] > args[0])
    for name, got in results.items():
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=name)
