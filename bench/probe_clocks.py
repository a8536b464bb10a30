"""Why is a large sparse layer slower under CUDA graphs than eagerly? A probe (round 12).

In RESULTS run 11, 16384×4096→4096 at 90% (G = 128) ran the chosen sparse kernel in
146 µs eagerly (``do_bench``: the L2 is flushed before every call, so the GPU spends
about 60 µs on the flush between two calls) but in 170 µs per call under a CUDA graph
(20 calls back to back), while dense cuBLAS took about 865 µs both ways. So eagerly the
ratio was 5.94×, under graphs 5.07×. This runs each path the two ways for a fixed time
while ``nvidia-smi`` samples the SM clock and the board power every 20 ms, and prints
per phase the time per call and the median clock and power, so the gap can be put on
the clock (power or thermal limit) or not; ``nvidia-smi`` also says which limit holds the
clock down.

    PYTHONPATH=. python bench/probe_clocks.py [--shadow]

``--shadow`` also times each path the way bench_tile's graph column does
(``dispatch._time_ms``) right after 1.5 s of the other path and right after 1.5 s of
itself.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tile import random_layer  # noqa: E402
from sparsefx.runtime.cuda import dispatch, register_cuda_kernels  # noqa: E402

PHASE_S = 2.0          # seconds each phase runs
REST_S = 1.5           # idle seconds between phases (the clock recovers)
REPS = 20              # calls per graph replay, as dispatch._time_ms


#: clock event reason bits (nvidia-smi -q -d PERFORMANCE names them)
REASONS = {0x4: "sw power cap", 0x8: "hw slowdown", 0x20: "sw thermal", 0x40: "hw thermal",
           0x80: "power brake"}


class Sampler:
    """``nvidia-smi`` sampling SM clock (MHz), power (W), temperature and the active
    clock event reasons (why the clock is below its maximum) every 20 ms."""

    def __init__(self):
        query = None
        for field in ("clocks_event_reasons.active", "clocks_throttle_reasons.active"):
            q = f"--query-gpu=clocks.sm,power.draw,temperature.gpu,{field}"
            once = subprocess.run(["nvidia-smi", q, "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True)
            if once.returncode == 0:        # older drivers know only the second name
                query = q
                break
        query = query or "--query-gpu=clocks.sm,power.draw,temperature.gpu"
        self.proc = subprocess.Popen(
            ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "20"],
            stdout=subprocess.PIPE, text=True, bufsize=1)
        self.samples: list[tuple] = []   # t, MHz, W, °C, reason mask
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            fields = line.split(",") + ["0x0"]
            try:
                sample = (time.time(), float(fields[0]), float(fields[1]), float(fields[2]),
                          int(fields[3].strip(), 16))
            except ValueError:
                continue
            self.samples.append(sample)

    def between(self, t0: float, t1: float):
        # skip the first 200 ms of a phase: the clock settles
        got = [s for s in self.samples if t0 + 0.2 <= s[0] <= t1]
        if not got:
            return None
        # the reasons active in at least half of the samples
        why = [name for bit, name in REASONS.items()
               if sum(1 for s in got if s[4] & bit) * 2 >= len(got)]
        return (statistics.median(s[1] for s in got), statistics.median(s[2] for s in got),
                max(s[3] for s in got), len(got), ", ".join(why) or "none")

    def stop(self):
        self.proc.terminate()


def run_for(fn, seconds: float) -> float:
    """Call ``fn`` (which enqueues ``n`` calls and returns ``n``) for ``seconds``;
    returns µs per call measured by CUDA events over the whole phase."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    calls, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        calls += fn()
        if calls % 200 < REPS:
            torch.cuda.synchronize()   # keep the queue short so time.time() tracks the GPU
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / calls


def graph_of(fn):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(REPS):
            fn()

    def replay() -> int:
        g.replay()
        return REPS
    return replay


def flushed(fn):
    """Each call preceded by zeroing 256 MB, as triton's do_bench does; the returned
    time per call counts only ``fn`` (events around it)."""
    cache = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    times: list = []

    def one() -> int:
        cache.zero_()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        times.append((s, e))
        return 1
    return one, times


def main():
    assert register_cuda_kernels()
    gen = torch.Generator().manual_seed(0)
    sampler = Sampler()
    time.sleep(1.0)
    print("| case | path | mode | µs per call | median SM MHz | median W | max °C | samples "
          "| clock held down by |")
    print("|---|---|---|---|---|---|---|---|---|")
    for M, K, N, sparsity in [(16384, 4096, 4096, 0.9), (16384, 4096, 4096, 0.75),
                              (8192, 4096, 11008, 0.9), (8192, 4096, 11008, 0.75)]:
        G = 128
        W, p, b, _ = random_layer(N, K, G, sparsity, False, gen)
        x_rm = torch.randn(M, K, device="cuda", dtype=torch.float16)
        x = x_rm.t().contiguous()
        args = (x, p.values, p.row_idx, p.row_ptr, p.col_map, b, N, "none", True)
        dec = dispatch.decide(*args, force=True)
        paths = {"dense F.linear": lambda: F.linear(x_rm, W, b),
                 f"chosen ({dec.choice})": lambda: torch.ops.sparsefx.tile_linear(*args)}
        case = f"{M}×{K}→{N} {sparsity:.0%}"
        for name, fn in paths.items():
            for mode in ("graph", "flushed"):
                time.sleep(REST_S)
                if mode == "graph":
                    step, times = graph_of(fn), None
                else:
                    step, times = flushed(fn)
                t0 = time.time()
                us = run_for(step, PHASE_S)
                t1 = time.time()
                if times is not None:       # time of fn alone, median over calls
                    us = statistics.median(s.elapsed_time(e) for s, e in times) * 1e3
                got = sampler.between(t0, t1)
                clk = "n/a | n/a | n/a | 0 | n/a" if got is None else \
                    f"{got[0]:.0f} | {got[1]:.0f} | {got[2]:.0f} | {got[3]} | {got[4]}"
                print(f"| {case} | {name} | {mode} | {us:.1f} | {clk} |", flush=True)
        print(f"# {case}: choice {dec.choice} {dec.config}")
        if "--shadow" in sys.argv:
            shadow(case, paths)
    sampler.stop()


def shadow(case: str, paths: dict) -> None:
    """bench_tile's graph timing of each path (``dispatch._time_ms``, as it takes it)
    right after 1.5 s of the other path, and right after 1.5 s of the same path: does
    the timing depend on the clock the previous path left?"""
    (dense_name, dense), (chosen_name, chosen) = paths.items()
    for name, fn, other in ((dense_name, dense, chosen), (chosen_name, chosen, dense)):
        got = {}
        for before_name, before in (("other path", other), ("same path", fn)):
            time.sleep(REST_S)
            run_for(graph_of(before), 1.5)
            got[before_name] = dispatch._time_ms(fn) * 1e3
        print(f"# {case}: {name}: _time_ms {got['other path']:.1f} µs right after the "
              f"other path, {got['same path']:.1f} µs right after itself", flush=True)


if __name__ == "__main__":
    main()
