"""``torchrun --nproc-per-node 2 -m thinklens ...`` on the CPU (gloo over loopback) writes what one process writes,
and a launch killed with SIGKILL resumes, with the same or another world size, to every item exactly once.

Each launch is a real torchrun (``python -m torch.distributed.run``) with a c10d rendezvous on 127.0.0.1 port 0
(torchrun picks a free port); the one-process references run in this process on tiny-r1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import one_torch_thread
from thinklens.distributed import part_files
from thinklens.jsonl import read_jsonl

pytestmark = pytest.mark.slow
N_TRACES = 120  # toy traces for attention: enough that a kill lands mid-run
N_PROBLEMS = 32
TIMEOUT = 300  # seconds per launch (they take 10-30 s on 2 busy cores)


def _cmd(args: list[str], nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", "127.0.0.1:0", "-m", "thinklens", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(args, nproc), capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    assert proc.returncode == 0, f"torchrun {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc


def killed_mid_run(args: list[str], watch: Path, min_records: int, nproc: int = 2) -> int:
    """Start a launch, wait until its ranks have written ``min_records`` records to their parts of ``watch``, then
    SIGKILL the launcher and every rank at once (a node that dies); returns the records the parts hold."""
    import psutil

    proc = subprocess.Popen(_cmd(args, nproc), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
                            start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            n = sum(len(p.read_bytes().splitlines()) for p in part_files(watch))
            if n >= min_records or proc.poll() is not None:
                break
            time.sleep(0.02)
    finally:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=60)
        psutil.wait_procs(family, timeout=60)
    assert proc.returncode == -9, f"the launch ended before it was killed:\n{proc.stderr.read().decode()[-3000:]}"
    return sum(len(p.read_bytes().splitlines()) for p in part_files(watch))


@pytest.fixture(scope="module")
def one_thread():
    with one_torch_thread():  # as torchrun's ranks (OMP_NUM_THREADS=1)
        yield


@pytest.fixture(scope="module")
def tiny(one_thread):
    from thinklens.models import load_model

    return load_model("tiny-r1", device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    """Toy traces (with slips and gold answers), one bad line and one repeated id."""
    from thinklens.toy import full_text, generate_problems

    path = tmp_path_factory.mktemp("traces") / "traces.jsonl"
    problems = generate_problems(N_TRACES, seed=11)
    with path.open("w") as f:
        for i, p in enumerate(problems):
            f.write(json.dumps({"id": p.id, "text": full_text(p), "gold_answer": p.answer}) + "\n")
            if i == 7:
                f.write("{torn\n")
        f.write(json.dumps({"id": problems[3].id, "text": "again"}) + "\n")
    return path


@pytest.fixture(scope="module")
def attention_reference(tiny, traces, tmp_path_factory):
    from thinklens.attention.segments import score_trace_file

    out = tmp_path_factory.mktemp("attention1")
    score_trace_file(tiny.model, tiny.tokenizer, traces, out, profile=tiny.profile, model_name="tiny-r1",
                     progress=False)
    return out


def _scores(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / "head_scores.npz") as z:
        return {k: z[k] for k in z.files}


def _by_id(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.argsort(scores["ids"])
    return {k: v[order] for k, v in scores.items()}


def _assert_same_scores(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    assert list(a["ids"]) == list(b["ids"])
    worst = 0.0
    for k in a:
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(b[k], a[k], atol=1e-6, equal_nan=True)
            if not np.isnan(a[k]).all():
                worst = max(worst, float(np.nanmax(np.abs(b[k] - a[k]))))
        else:
            assert (a[k] == b[k]).all(), k
    return worst


def test_attention_on_two_ranks_writes_the_one_process_scores(attention_reference, traces, tmp_path):
    out = tmp_path / "attention2"
    t0 = time.perf_counter()
    proc = torchrun(["attention", "--model", "tiny-r1", "--traces", str(traces), "--output", str(out), "--quiet"])
    seconds = time.perf_counter() - t0
    worst = _assert_same_scores(_scores(attention_reference), _scores(out))
    print(f"attention 1 vs 2 processes: {N_TRACES} traces, max |diff| {worst:.1e}, 2-process launch {seconds:.1f}s")
    for name in ("scores_partial.jsonl", "skipped.jsonl", "head_scores.json"):  # the very same files
        assert (out / name).read_bytes() == (attention_reference / name).read_bytes(), name
    tokens = sorted(p.name for p in (attention_reference / "tokens").iterdir())
    assert tokens == sorted(p.name for p in (out / "tokens").iterdir()) and len(tokens) == 10
    assert not part_files(out / "scores_partial.jsonl") and not part_files(out / "skipped.jsonl")
    report = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(report) == 1 and report[0]["n_traces"] == N_TRACES  # rank 0 reports for all
    assert proc.stderr.count("duplicate id") == 1 and proc.stderr.count("invalid JSON") == 1


def test_attention_killed_mid_run_resumes_in_one_process_to_every_trace_once(tiny, attention_reference, traces,
                                                                              tmp_path):
    from thinklens.attention.segments import score_trace_file

    out = tmp_path / "attention_killed"
    n = killed_mid_run(["attention", "--model", "tiny-r1", "--traces", str(traces), "--output", str(out), "--quiet"],
                       out / "scores_partial.jsonl", min_records=6)
    assert 0 < n < N_TRACES and not (out / "head_scores.npz").exists()
    # the rerun has another world size: it folds the two ranks' parts, then scores only what is missing
    score_trace_file(tiny.model, tiny.tokenizer, traces, out, profile=tiny.profile, model_name="tiny-r1",
                     progress=False)
    ids = [line.record["id"] for line in read_jsonl(out / "scores_partial.jsonl")]
    assert len(ids) == len(set(ids)) == N_TRACES
    _assert_same_scores(_by_id(_scores(attention_reference)), _by_id(_scores(out)))
    assert not part_files(out / "scores_partial.jsonl")


@pytest.fixture(scope="module")
def collect_reference(tiny, tmp_path_factory):
    from thinklens.empirical.collect import GenerationSettings, collect
    from thinklens.empirical.datasets import load_problems

    out = tmp_path_factory.mktemp("collect1") / "with.jsonl"
    collect(tiny, load_problems("arithmetic", limit=N_PROBLEMS), output=out, model_name="tiny-r1", progress=False,
            settings=GenerationSettings(batch_size=2))
    return out


def test_collect_killed_mid_run_resumes_on_two_ranks_to_the_one_process_file(collect_reference, tmp_path):
    out = tmp_path / "with.jsonl"
    args = ["collect", "--model", "tiny-r1", "--dataset", "arithmetic", "--limit", str(N_PROBLEMS), "--reasoning",
            "with", "--batch-size", "2", "--output", str(out), "--quiet"]
    n = killed_mid_run(args, out, min_records=4)
    assert 0 < n < N_PROBLEMS and not out.exists()
    proc = torchrun(args)
    records = [line.record for line in read_jsonl(out)]
    assert len({r["id"] for r in records}) == len(records) == N_PROBLEMS
    reference = {r["id"]: r for r in (line.record for line in read_jsonl(collect_reference))}
    assert {r["id"]: r for r in records} == reference  # the same records (generation is greedy)
    assert json.loads(proc.stdout.splitlines()[-1])["n_skipped_done"] == n  # the killed launch's records were kept
    assert not part_files(out)


def test_patch_on_two_ranks_gives_the_one_process_nld(tiny, tmp_path):
    from thinklens.patching.pairs import load_pairs, save_pairs, toy_pairs
    from thinklens.patching.results import PatchingResult
    from thinklens.patching.sweeps import patch_pairs

    pairs_path = tmp_path / "pairs.jsonl"
    save_pairs(pairs_path, toy_pairs(6, 0, tiny.tokenizer)[0])
    one = patch_pairs(tiny.model, tiny.profile, load_pairs(pairs_path), tmp_path / "patch1", progress=False)
    torchrun(["patch", "--model", "tiny-r1", "--pairs", str(pairs_path), "--output", str(tmp_path / "patch2"),
              "--quiet"])
    two = PatchingResult.load(tmp_path / "patch2")
    assert list(two.pair_ids) == list(one.pair_ids) and len(one.pair_ids) == 6
    np.testing.assert_allclose(two.nld, one.nld, atol=1e-6, equal_nan=True)
    assert (tmp_path / "patch2" / "pairs.jsonl").read_text().count("\n") == 6
    print(f"patch 1 vs 2 processes: max |NLD diff| {float(np.nanmax(np.abs(two.nld - one.nld))):.1e}")


def test_run_on_two_ranks_writes_the_one_process_run(one_thread, tmp_path):
    import thinklens as tl
    from thinklens.steps.results import StepsConfig

    # the CLI's --n-bootstrap sets the run's and the steps agreement's bootstrap alike
    args = dict(limit=8, n_pairs=2, n_bootstrap=50, steps=StepsConfig(n_bootstrap=50))
    one = tl.run(tl.RunConfig(output=str(tmp_path / "run1"), **args), progress=False)
    torchrun(["run", "--limit", "8", "--n-pairs", "2", "--n-bootstrap", "50", "--output", str(tmp_path / "run2"),
              "--quiet"])
    two = tl.RunResult.load(tmp_path / "run2")
    for key in ("evaluation", "heads", "patching"):
        assert two.results[key] == one.results[key], key
    for name in ("traces/with.jsonl", "traces/without.jsonl", "graded/with.jsonl", "attention/scores_partial.jsonl",
                 "heads.json"):
        assert (tmp_path / "run2" / name).read_bytes() == (tmp_path / "run1" / name).read_bytes(), name
    assert (tmp_path / "run2" / "report.html").is_file()
    assert not list((tmp_path / "run2").rglob("*.rank*-of-*"))
    # heads (induction, retrieval), ablation, debugging and steps ran on both ranks: one process's files
    assert_same_stage_files(tmp_path / "run1", tmp_path / "run2")


# files that hold timings (dropped before comparing) and resampling's KL, a float sum over a set of answer strings,
# whose order (hence last bit, ~1e-16) depends on the process's string hash seed, not on the sharding
TIMED = ("steps/progress.jsonl", "steps/result.json", "attention/ablation/ablation.json")


def _untimed(x: object) -> object:
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in ("seconds", "timings")}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


def _assert_close(a: object, b: object, where: str) -> None:
    """Equal structures; floats equal to 1e-12 relative (the hash-seed-dependent KL above), all else exactly."""
    if isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-12 * max(1.0, abs(a)), where
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _parsed(path: Path, root: Path) -> list:
    text = path.read_text().replace(str(root), "ROOT")
    lines = text.splitlines() if path.suffix == ".jsonl" else [text]
    return [_untimed(json.loads(line)) for line in lines]


def assert_same_stage_files(one: Path, two: Path, dirs: tuple[str, ...] = ("attention/ablation", "attention/debug",
                                                                         "steps")) -> int:
    """Every JSON/JSONL/NPZ file of ``dirs`` (and the induction and retrieval scores) is one process's: text equal
    (:data:`TIMED` files: timings aside, floats to 1e-12), arrays exactly equal; returns how many were compared."""
    names = ["attention/induction.json", "attention/retrieval.json"]
    names += sorted(q.relative_to(one).as_posix() for d in dirs if (one / d).is_dir() for q in (one / d).rglob("*")
                    if q.suffix in (".json", ".jsonl", ".npz"))
    names = [n for n in names if (one / n).exists()]
    for n in names:
        a, b = one / n, two / n
        assert b.exists(), n
        if a.suffix == ".npz":
            with np.load(a) as za, np.load(b) as zb:
                assert za.files == zb.files, n
                for k in za.files:
                    assert np.array_equal(za[k], zb[k], equal_nan=za[k].dtype.kind == "f"), f"{n}:{k}"
        elif n in TIMED:
            _assert_close(_parsed(a, one), _parsed(b, two), n)
        else:  # the very same bytes, the run directory's path aside (settings name their input files)
            assert a.read_text().replace(str(one), "ROOT") == b.read_text().replace(str(two), "ROOT"), n
    return len(names)


def test_ablation_on_two_ranks_shares_batches_and_writes_the_one_process_files(tiny, attention_reference, tmp_path):
    from thinklens.attention.ablation import run_ablation

    kw = dict(top_k=3, random_draws=1, limit=8, batch_size=2)  # 4 batches: 2 per rank
    run_ablation(tiny.model, tiny.tokenizer, tiny.profile, attention_reference, tmp_path / "r1" / "attention/ablation",
                 model_name="tiny-r1", progress=False, **kw)
    torchrun(["heads", "ablate", "--model", "tiny-r1", "--scores", str(attention_reference), "--top", "3",
              "--random-draws", "1", "--limit", "8", "--batch-size", "2", "--output",
              str(tmp_path / "r2" / "attention/ablation"), "--json"])
    assert assert_same_stage_files(tmp_path / "r1", tmp_path / "r2", ("attention/ablation",)) >= 5


def test_steps_killed_mid_run_resumes_in_one_process_to_the_one_process_result(tiny, traces, tmp_path):
    from thinklens.steps.results import StepsConfig
    from thinklens.steps.run import run_steps

    subset = tmp_path / "traces.jsonl"  # 30 lines, one of them torn
    subset.write_text("".join(traces.read_text().splitlines(keepends=True)[:30]))
    config = StepsConfig(methods="attention,truncation", proximity=1)
    run_steps(tiny.model, tiny.tokenizer, tiny.profile, subset, tmp_path / "one" / "steps", config, progress=False)
    out = tmp_path / "two" / "steps"
    n = killed_mid_run(["steps", "--model", "tiny-r1", "--traces", str(subset), "--output", str(out), "--methods",
                        "attention,truncation", "--proximity", "1", "--quiet"], out / "progress.jsonl", min_records=4)
    assert 0 < n < 29 and not (out / "steps.jsonl").exists()
    # the rerun has another world size: it folds the two ranks' parts, then runs only the missing traces
    run_steps(tiny.model, tiny.tokenizer, tiny.profile, subset, out, config, progress=False)
    ids = [line.record["id"] for line in read_jsonl(out / "progress.jsonl")]
    assert len(ids) == len(set(ids)) == 29
    assert not part_files(out / "progress.jsonl") and not part_files(out / "skipped.jsonl")
    for name in ("steps.jsonl", "receivers.json", "truncation.json", "agreement.json", "skipped.jsonl"):
        assert (out / name).read_text() == (tmp_path / "one" / "steps" / name).read_text(), name
