"""Real-size and hostile inputs: bounded memory and no silent mis-scoring (GitHub issue 10).

Memory is measured in a child process: its peak RSS comes from ``os.wait4`` (that child alone, unlike
``RUSAGE_CHILDREN``, which keeps the maximum of every child this test process ever ran), and a watchdog kills the child
when it passes a generous ceiling, so a regression fails here instead of exhausting the machine.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from thinklens.attention.heads import rank_heads
from thinklens.attention.segments import SCORE_NAMES, HeadScores
from thinklens.errors import ThinklensError, TraceError
from thinklens.jsonl import count_lines, read_jsonl
from thinklens.stats import bootstrap_ci, paired_bootstrap_diff_ci, permutation_test
from thinklens.traces import DEFAULT_MAX_CHARS, Trace, char_bound

MiB = 2**20


def run_measured(code: str, *args: str, kill_above: int = 4096 * MiB, timeout: float = 600) -> tuple[str, int, float]:
    """Run ``python -c code args``; return (stdout, peak RSS in bytes of that child, wall seconds).

    The peak is the child's own ``VmHWM`` at exit: ``ru_maxrss`` of a forked child starts from the parent's RSS at
    the fork (Linux keeps the old memory's high-water mark across exec), so under a large pytest process it would
    measure pytest."""
    code = _HWM_AT_EXIT + textwrap.dedent(code)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=err)
        killed = ""
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = next(int(x.split()[1]) * 1024 for x in Path(f"/proc/{p.pid}/status").read_text().splitlines()
                           if x.startswith("VmRSS:"))
            except (OSError, StopIteration):
                rss = 0
            if rss > kill_above or time.perf_counter() - t0 > timeout:
                killed = f"killed at RSS {rss / MiB:.0f} MiB after {time.perf_counter() - t0:.0f} s"
                os.kill(p.pid, signal.SIGKILL)
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert not killed and p.returncode == 0, f"{killed} rc={p.returncode}\n{stderr[-3000:]}"
    hwm = re.findall(r"^VMHWM (\d+)$", stderr, re.M)
    return stdout, int(hwm[-1]) * 1024 if hwm else usage.ru_maxrss * 1024, seconds


_HWM_AT_EXIT = ("import atexit, sys\n"
                "atexit.register(lambda: sys.stderr.write('VMHWM ' + next(x.split()[1] for x in "
                "open('/proc/self/status') if x.startswith('VmHWM:')) + '\\n'))\n")


# -- 1. statistics in bounded memory ---------------------------------------------------------------------------------
def _old_permutation_test(x, y, n_permutations, seed=0, alternative="two-sided"):
    """The pre-issue-10 implementation (a full n_permutations x n_pooled argsort), kept as the reference."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    observed = float(x.mean() - y.mean())
    pooled = np.concatenate([x, y])
    perm = np.argsort(np.random.default_rng(seed).random((n_permutations, len(pooled))), axis=1)
    d = pooled[perm[:, : len(x)]].mean(axis=1) - pooled[perm[:, len(x) :]].mean(axis=1)
    hits = {"greater": np.sum(d >= observed), "less": np.sum(d <= observed),
            "two-sided": np.sum(np.abs(d) >= abs(observed))}[alternative]
    return observed, float((hits + 1) / (n_permutations + 1))


@pytest.mark.parametrize("case", range(6))
def test_permutation_test_matches_the_full_permutation_reference(case):
    rng = np.random.default_rng(case)
    n_x, n_y, shift = [(5, 40, 0.3), (40, 5, -0.2), (30, 30, 0.1), (3, 200, 0.8), (25, 60, 0.0), (8, 8, 0.5)][case]
    x = rng.normal(shift, 1, n_x)
    y = rng.normal(0, 1, n_y)
    if case == 4:  # discrete data with many ties
        x, y = np.round(x), np.round(y)
    n = 4000
    for alt in ("two-sided", "greater", "less"):
        d_old, p_old = _old_permutation_test(x, y, n, alternative=alt)
        d_new, p_new = permutation_test(x, y, n_permutations=n, seed=1, alternative=alt)
        assert d_new == pytest.approx(d_old, abs=1e-12)
        se = np.sqrt(max(p_old * (1 - p_old), 1 / n) / n)
        assert abs(p_new - p_old) <= 5 * np.sqrt(2) * se, (alt, p_old, p_new)


def test_permutation_test_is_the_same_in_one_batch_or_many(monkeypatch):
    rng = np.random.default_rng(7)
    x, y = rng.normal(0.2, 1, 40), rng.normal(0, 1, 300)
    whole = permutation_test(x, y, n_permutations=3000)
    monkeypatch.setattr("thinklens.stats._CHUNK_ELEMENTS", 100)  # batches of 2 permutations
    assert permutation_test(x, y, n_permutations=3000) == whole


def test_permutation_test_ties_and_extremes():
    assert permutation_test([1.0] * 5, [1.0] * 50, n_permutations=500)[1] == 1.0  # every permutation ties
    assert permutation_test([0.3] * 7, [0.3] * 9, n_permutations=500, alternative="greater")[1] == 1.0
    d, p = permutation_test(np.arange(10.0) + 100, np.arange(50.0), n_permutations=999, alternative="greater")
    assert p == 1 / 1000 and d > 0
    assert np.isnan(permutation_test([], [1.0])[1])
    with pytest.raises(ValueError, match="alternative"):
        permutation_test([1.0], [2.0], alternative="bigger")
    with pytest.raises(ValueError, match="finite"):  # formerly p = 1 / (n + 1), "significant"
        permutation_test([1.0, np.nan], [2.0, 3.0])


@pytest.mark.parametrize("chunk", [None, 1000])
def test_bootstraps_equal_the_per_resample_loop(chunk, monkeypatch):
    """Batched resampling draws the same indices as the old one-resample-at-a-time loop: identical intervals, with
    one batch or many (``chunk``: elements per batch)."""
    if chunk is not None:
        monkeypatch.setattr("thinklens.stats._CHUNK_ELEMENTS", chunk)
    v = np.random.default_rng(0).exponential(size=137)
    rng = np.random.default_rng(3)
    old = np.array([np.mean(v[rng.integers(0, len(v), len(v))]) for _ in range(3000)])
    a95, a90 = (1 - 0.95) / 2, (1 - 0.9) / 2  # the functions' own quantile levels, to the last bit
    assert bootstrap_ci(v, n_resamples=3000, seed=3) == tuple(float(q) for q in np.quantile(old, [a95, 1 - a95]))

    def p90(a):  # no axis keyword: applied row by row
        return float(np.percentile(a, 90))

    rng = np.random.default_rng(4)
    old = np.array([p90(v[rng.integers(0, len(v), len(v))]) for _ in range(500)])
    assert bootstrap_ci(v, p90, n_resamples=500, seed=4, level=0.9) == tuple(
        float(q) for q in np.quantile(old, [a90, 1 - a90]))
    x, y = v[:60], v[60:120]
    idx = np.random.default_rng(5).integers(0, 60, size=(2000, 60))
    old = x[idx].mean(axis=1) - y[idx].mean(axis=1)
    assert paired_bootstrap_diff_ci(x, y, n_resamples=2000, seed=5) == tuple(
        float(q) for q in np.quantile(old, [a95, 1 - a95]))


@pytest.mark.slow
def test_cue_statistics_on_50_real_size_traces_stays_under_1_gb():
    """50 traces x 3,000 reasoning tokens (1% cues, 5 heads), default 10,000 permutations: 150k pooled tokens.
    Before: a 10k x 150k permutation matrix, ~23.5 GB. Also a balanced 75k/75k split (the O(n) per-permutation
    path) and a 1e6-value bootstrap."""
    out, peak, seconds = run_measured("""
        import json, time
        import numpy as np
        from thinklens.attention.tokens import TokenAttention, cue_statistics
        from thinklens.stats import bootstrap_ci, permutation_test
        rng = np.random.default_rng(0)
        items = []
        for i in range(50):
            mask = np.zeros(3000, dtype=bool)
            mask[rng.choice(3000, 30, replace=False)] = True
            values = rng.gamma(2.0, 1.0, (5, 3000)) * np.where(mask, 1.5, 1.0)
            items.append(TokenAttention(f"t{i}", [(0, h) for h in range(5)], ["x"] * 3000, values, mask))
        t0 = time.perf_counter()
        s = cue_statistics(items)
        t1 = time.perf_counter()
        _, p_bal = permutation_test(rng.random(75_000), rng.random(75_000), n_permutations=1000)
        lo, hi = bootstrap_ci(rng.random(1_000_000), n_resamples=200)
        print(json.dumps({"n_cue": s.n_cue_tokens, "n_other": s.n_other_tokens, "p": s.p_value, "diff": s.diff,
                          "cue_seconds": t1 - t0, "p_bal": p_bal, "ci": [lo, hi]}))
    """)
    res = json.loads(out.splitlines()[-1])
    print(f"cue_statistics 150k pooled: peak RSS {peak / MiB:.0f} MiB, {res['cue_seconds']:.1f} s "
          f"(child {seconds:.1f} s)")
    assert res["n_cue"] == 1500 and res["n_other"] == 148_500
    assert res["p"] == pytest.approx(1 / 10_001) and res["diff"] > 0  # the planted 1.5x cue attention is found
    assert 0 < res["p_bal"] <= 1 and res["ci"][0] < 0.5 < res["ci"][1]
    assert peak <= 1024 * MiB


# -- 2. one huge record or line costs a reason line, not the machine's memory ----------------------------------------
def test_records_are_bounded_by_characters_before_tokenizing():
    class NoTokenizer:  # tokenizing is what costs memory: it must not happen
        name_or_path = "deepseek-r1-distill-qwen"

        def __call__(self, *a, **k):
            raise AssertionError("tokenized an over-long record")

    text = "<think>" + "x" * 1000 + "</think>ok"
    for make in (lambda b: Trace.from_text(text, NoTokenizer(), max_chars=b),
                 lambda b: Trace.from_record({"text": text}, NoTokenizer(), max_chars=b),
                 lambda b: Trace.from_record({"prompt": "q", "completion": text}, NoTokenizer(), max_chars=b)):
        with pytest.raises(TraceError, match=r"too long: 1,01\d characters > the record bound of 1,000"):
            make(1000)
    assert char_bound(4096) == 4096 * 16 and char_bound(None) == DEFAULT_MAX_CHARS >= 16_384 * 16


def test_lines_over_the_limit_are_reported_unread_and_reading_goes_on(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_bytes(b'{"id": "a"}\n' + b"\xff" * 3000 + b'\n{"id": "b"}\n' + b"[" * 5000)  # bad UTF-8, torn tail
    items = list(read_jsonl(f, max_line_bytes=2048))
    assert [(i.lineno, i.record and i.record["id"]) for i in items if i.record] == [(1, "a"), (3, "b")]
    errors = {i.lineno: i.error for i in items if i.error}
    assert errors == {2: "line of 3000 bytes exceeds the 2048-byte record limit",  # not decoded: no UTF-8 error
                      4: "line of 5000 bytes exceeds the 2048-byte record limit"}
    assert count_lines(f) == 4
    exact = tmp_path / "exact.jsonl"
    exact.write_text('{"k": "' + "y" * 2039 + '"}\n')  # 2048 bytes + newline: within the limit
    assert next(read_jsonl(exact, max_line_bytes=2048)).record is not None
    assert next(read_jsonl(exact, max_line_bytes=2047)).error.startswith("line of 2048 bytes exceeds")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/full"])
def test_an_endless_stream_ends_with_the_limit_error(device):
    if not os.path.exists(device):
        pytest.skip(f"{device} absent")
    out, peak, _ = run_measured(f"""
        from thinklens.jsonl import read_jsonl
        items = list(read_jsonl({device!r}))
        print(len(items), items[0].where, items[0].error)
        import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """, kill_above=1024 * MiB, timeout=120)
    first = out.splitlines()[0]
    assert re.match(rf"1 {device}:1 line of more than 6\d MiB exceeds the 64 MiB record limit; .*reading stops", first)
    assert peak < 400 * MiB


def _toy_lines():
    from thinklens.toy import full_text, generate_problems

    return [(p.id, full_text(p)) for p in generate_problems(3, seed=5)]


@pytest.mark.slow
def test_a_50_mb_record_and_a_70_mb_line_among_good_ones(tmp_path):
    """`traces inspect` and `score_trace_file` (with --max-tokens 4096) process the good records, report the bad
    ones, and stay far below the ~20 GB that tokenizing a 50 MB record used to take."""
    good = _toy_lines()
    _, text = good[0]
    cut = text.index("</think>")
    path = tmp_path / "traces.jsonl"
    with path.open("w") as f:
        f.write(json.dumps({"id": good[0][0], "text": good[0][1]}) + "\n")
        f.write(json.dumps({"id": "huge", "text": text[:cut] + "7+5=12\n" * (50_000_000 // 7) + text[cut:]}) + "\n")
        f.write(json.dumps({"id": good[1][0], "text": good[1][1]}) + "\n")
        f.write('{"id": "garbage", "text": "' + "z" * (70 * MiB) + '"}\n')
        f.write(json.dumps({"id": good[2][0], "text": good[2][1]}) + "\n")
    out, peak, seconds = run_measured("""
        import contextlib, io, json, sys
        from thinklens.cli.main import main
        from thinklens.attention.segments import score_trace_file
        from thinklens.models import load_model
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["traces", "inspect", sys.argv[1], "--tokenizer", "tiny-r1"])
        model, tok, prof = load_model("tiny-r1", "cpu", "fp32")
        hs = score_trace_file(model, tok, sys.argv[1], sys.argv[2], profile=prof, max_tokens=4096, progress=False)
        print(json.dumps({"rc": rc, "rows": [json.loads(x) for x in buf.getvalue().splitlines()], "ids": hs.ids,
                          "skipped": hs.skipped}))
    """, str(path), str(tmp_path / "att"), kill_above=3072 * MiB)
    res = json.loads(out.splitlines()[-1])
    print(f"50 MB record + 70 MB line: peak RSS {peak / MiB:.0f} MiB, {seconds:.1f} s")
    good_ids = [g[0] for g in good]
    assert res["rc"] == 0
    rows = res["rows"]
    assert [r["id"] for r in rows if "error" not in r] == good_ids
    errors = {r["line"]: r["error"] for r in rows if "error" in r}
    assert errors[2].startswith("too long: 50,000,") and "record bound of 524,288" in errors[2]
    assert errors[4] == "line of 70.0 MiB exceeds the 64 MiB record limit"
    assert res["ids"] == good_ids
    reasons = {s["line"]: s["reason"] for s in res["skipped"]}
    assert "record bound of 65,536" in reasons[2] and "(huge)" in reasons[2]  # 4096 tokens x 16 characters
    assert reasons[4].endswith(":4: line of 70.0 MiB exceeds the 64 MiB record limit")
    assert peak < 1536 * MiB


# -- 5. non-finite or mis-shaped head scores are errors or explicit exclusions ----------------------------------------
def _head_scores(n=12, L=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.uniform(0, 0.2, (n, L, H)).astype(np.float32)
    arr[:, 1, 2] += 0.5  # the planted RFH
    return HeadScores([f"p{i}" for i in range(n)], {s: arr.copy() for s in SCORE_NAMES}, np.full(n, 100),
                      np.full(n, 5), np.full(n, 80), "toy")


def test_an_all_nan_head_is_excluded_with_a_warning_not_silently(tmp_path, capsys):
    from thinklens.cli.main import main

    hs = _head_scores()
    hs.scores["a2r"][:, 2, 3] = np.nan  # a head without any value
    hs.save(tmp_path)
    with pytest.warns(UserWarning, match=r"1 head\(s\) NaN in every trace: L2H3"):
        r = rank_heads(HeadScores.load(tmp_path), "a2r", top_k=20, n_bootstrap=20)
    assert (2, 3) not in r.pairs() and len(r.heads) == 11 and r.pairs()[0] == (1, 2) and r.n_traces == 12
    assert r.to_json()["excluded"] == [{"head": [2, 3], "reason": "NaN in every trace"}]
    with pytest.warns(UserWarning):
        assert main(["heads", "rank", str(tmp_path), "--json", "--bootstrap", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["excluded"] == [{"head": [2, 3], "reason": "NaN in every trace"}]


def test_traces_with_missing_values_are_excluded_and_named():
    hs = _head_scores()
    hs.scores["r2r"][[3, 7]] = np.nan  # traces scored without reasoning queries: legitimate, but reported
    hs.scores["r2r"][5, 0, 0] = np.nan  # a single missing value: the trace is left out, every head keeps 9 traces
    with pytest.warns(UserWarning, match=r"3 of 12 trace\(s\) with missing values: p3 \(NaN at every head\)"):
        r = rank_heads(hs, "r2r", top_k=3, n_bootstrap=0)
    assert r.n_traces == 9 and r.excluded[1] == {"trace": "p5", "reason": "NaN at 1 of 12 heads"}
    keep = [i for i in range(12) if i not in (3, 5, 7)]
    assert r.heads[0].mean == pytest.approx(float(hs.scores["r2r"][keep, 1, 2].mean()), rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # complete scores: no warning at all
        assert rank_heads(hs, "a2r", top_k=3, n_bootstrap=10).excluded == []
    hs.scores["r2r"][:] = np.nan
    with pytest.raises(ThinklensError, match="not computed"):
        rank_heads(hs, "r2r")


def test_infinite_out_of_range_and_mis_shaped_scores_are_errors(tmp_path):
    arr = _head_scores().scores["a2r"].astype(np.float64)
    arr[4, 0, 1] = np.inf  # used to be rank 1 with std NaN
    with pytest.raises(ThinklensError, match=r"infinite value\(s\) \(first: trace '#4', head L0H1\)"):
        rank_heads(arr)
    cases = {
        "inf": (lambda hs: hs.scores["a2r"].__setitem__((4, 0, 1), np.inf), r"'a2r'.*inf for trace 'p4' at head L0H1"),
        "range": (lambda hs: hs.scores["a2p"].__setitem__((2, 1, 1), 7.5), r"not attention masses.*7\.5"),
        "rows": (lambda hs: hs.scores.__setitem__("a2r", hs.scores["a2r"][:6]), r"'a2r' has shape \[6, 3, 4\], "
                 r"expected \[12, 3, 4\]"),
        "heads": (lambda hs: hs.scores.__setitem__("a2a", hs.scores["a2a"][:, :, :2]), r"'a2a' has shape"),
        "lens": (lambda hs: setattr(hs, "token_len", hs.token_len[:3]), r"'token_len' has shape \[3\]"),
    }
    for name, (corrupt, msg) in cases.items():
        hs = _head_scores()
        corrupt(hs)
        hs.save(tmp_path / name)
        with pytest.raises(ThinklensError, match=msg):
            HeadScores.load(tmp_path / name)
