"""The fuzz suite: seeded mutations of every kind of file thinklens reads, run through every command that reads it,
in this process (tiny-r1 loaded once). Each run must exit 0 (bad records skipped and reported) or 2 with one error
line, print no traceback, let no exception escape, end within its time bound, and leave every good record's output
equal to a clean run's. The mutators and the runner live in tests/fuzzing.py."""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fuzzing import (
    contract_violation,
    mutate_csv,
    mutate_json,
    mutate_jsonl,
    mutate_npz,
    run_cli,
)
from thinklens.errors import ThinklensError

pytestmark = pytest.mark.slow
SEED = 25
COUNTS: dict[str, int] = {}  # kind -> mutated inputs run
MIN_TOTAL = 1000

CSV_HEADER = ("query_a,answer_a,query_b,answer_b,domain,explanation,case_id,answers,llama-8B_answer_a_tok_len,"
              "llama-8B_answer_b_tok_len,qwen-1p5B_answer_a_tok_len,qwen-1p5B_answer_b_tok_len,"
              "qwen-7B_answer_a_tok_len,qwen-7B_answer_b_tok_len,is_number_case,is_binary_case")
CSV_ROWS = [  # made up here, in the paper's format (never the reference file)
    '"Considering 3+3, which is correct: 6 or 7?",6,"Considering 3+4, which is correct: 6 or 7?",7,Mathematics,'
    "sums,0,\"['6', '7']\",1,1,1,1,1,1,True,False",
    '"Considering lakes by depth, which is deeper: Baikal or Superior?",Baikal,"Considering lakes by area, which is '
    'larger: Baikal or Superior?",Superior,Geography,depth vs area,1,"[\'Baikal\', \'Superior\']",2,2,2,2,2,2,False,'
    "False",
    '"Considering ice at -5 C, is it solid: yes or no?",yes,"Considering ice at 5 C, is it solid: yes or no?",no,'
    "Physics,melting,2,\"['yes', 'no']\",1,1,1,1,1,1,False,True",
]


def _ok(outcome, what: str) -> None:
    why = contract_violation(outcome)
    assert why is None, f"{what}: {why}\n{outcome.err[-3000:]}"


def _count(kind: str) -> None:
    COUNTS[kind] = COUNTS.get(kind, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def cached_model():
    """One tiny-r1 for every in-process command (the CLI loads through ModelOptions.load)."""
    from thinklens.models import ModelOptions

    cache: dict = {}
    original = ModelOptions.load

    def load(self):
        key = (self.name, self.device, self.dtype, self.device_map, self.profile)
        if key not in cache:
            cache[key] = original(self)
        return cache[key]

    mp = pytest.MonkeyPatch()
    mp.setattr(ModelOptions, "load", load)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Clean inputs of every kind and the clean outputs to compare good records with."""
    d = tmp_path_factory.mktemp("fuzzbase")
    for argv in (["traces", "reference", "--dataset", "arithmetic", "--n", "4", "--output", str(d / "traces.jsonl")],
                 ["grade", str(d / "traces.jsonl"), "--output", str(d / "graded.jsonl"), "--quiet"],
                 ["attention", "--model", "tiny-r1", "--traces", str(d / "traces.jsonl"), "--output", str(d / "att"),
                  "--quiet"],
                 ["pairs", "toy", "--n", "3", "--output", str(d / "pairs.jsonl")],
                 ["patch", "--model", "tiny-r1", "--pairs", str(d / "pairs.jsonl"), "--output", str(d / "patch"),
                  "--layers", "0", "--positions", "final", "--quiet"]):
        o = run_cli(argv)
        assert o.rc == 0, (argv, o.err[-2000:])
    (d / "pairs.csv").write_text(CSV_HEADER + "\n" + "\n".join(CSV_ROWS) + "\n")
    return d


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _by_id(path: Path, key: str = "id", drop: tuple[str, ...] = ()) -> dict[str, dict]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and key in r:
            out.setdefault(str(r[key]), {k: v for k, v in r.items() if k not in drop})
    return out


def _fresh(tmp: Path) -> Path:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


# ------------------------------------------------------------------------------------------------------ JSONL
def test_traces(base, tmp_path):
    """Trace JSONL through `traces inspect`, `grade` and (every 8th) `attention`; graded good records as clean."""
    rng = random.Random(SEED)
    records = _records(base / "traces.jsonl")
    clean_graded = _by_id(base / "graded.jsonl")
    for n in range(160):
        m = mutate_jsonl(rng, records)
        w = _fresh(tmp_path / "w")
        f = w / "t.jsonl"
        f.write_bytes(m.data)
        _ok(run_cli(["traces", "inspect", "--tokenizer", "tiny-r1", str(f)]), f"inspect {m.what}")
        _ok(run_cli(["grade", str(f), "--output", str(w / "g.jsonl"), "--quiet"]), f"grade {m.what}")
        if m.good_ids is not None:
            got = _by_id(w / "g.jsonl")
            for i in m.good_ids:
                assert got.get(i) == clean_graded[i], f"grade {m.what}: good record {i} differs"
        if n % 8 == 0:
            _ok(run_cli(["attention", "--model", "tiny-r1", "--traces", str(f), "--output", str(w / "att"),
                         "--quiet"]), f"attention {m.what}")
        _count("trace JSONL")


def test_graded(base, tmp_path):
    rng = random.Random(SEED + 1)
    records = _records(base / "graded.jsonl")
    for _ in range(150):
        m = mutate_jsonl(rng, records)
        f = _fresh(tmp_path / "w") / "g.jsonl"
        f.write_bytes(m.data)
        _ok(run_cli(["evaluate", str(f), "--n-resamples", "20"]), f"evaluate {m.what}")
        _count("graded JSONL")


def test_pairs(base, tmp_path):
    """Pair JSONL through `patch`: a good pair's patching equals the clean run's."""
    rng = random.Random(SEED + 2)
    records = _records(base / "pairs.jsonl")
    clean = _by_id(base / "patch" / "pairs.jsonl", "pair_id", drop=("seconds",))
    for _ in range(80):
        m = mutate_jsonl(rng, records)
        w = _fresh(tmp_path / "w")
        (w / "p.jsonl").write_bytes(m.data)
        _ok(run_cli(["patch", "--model", "tiny-r1", "--pairs", str(w / "p.jsonl"), "--output", str(w / "out"),
                     "--layers", "0", "--positions", "final", "--quiet"]), f"patch {m.what}")
        got = _by_id(w / "out" / "pairs.jsonl", "pair_id", drop=("seconds",))
        for i in m.good_ids or ():
            a, b = got.get(i), clean[i]
            assert a is not None and np.allclose(a["nld"], b["nld"], atol=1e-5), f"patch {m.what}: pair {i} differs"
        _count("pairs JSONL")


# ------------------------------------------------------------------------------------------------------- npz
def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_head_scores(base, tmp_path):
    rng = random.Random(SEED + 3)
    arrays = _npz(base / "att" / "head_scores.npz")
    for n in range(150):
        m = mutate_npz(rng, arrays)
        w = _fresh(tmp_path / "w")
        (w / "head_scores.npz").write_bytes(m.data)
        _ok(run_cli(["heads", "rank", str(w / "head_scores.npz"), "--bootstrap", "10", "--json"]), f"rank {m.what}")
        if n % 10 == 0:
            shutil.copy(base / "traces.jsonl", w / "t.jsonl")
            _ok(run_cli(["steps", "--model", "tiny-r1", "--traces", str(w / "t.jsonl"), "--output", str(w / "st"),
                         "--rfh-scores", str(w / "head_scores.npz"), "--methods", "attention", "--quiet"]),
                f"steps {m.what}")
        _count("head_scores.npz")


def test_patching_result(base, tmp_path):
    """result.npz and result.json of `patch`, read back as `report` reads them (PatchingResult.load)."""
    from thinklens.patching.results import PatchingResult

    rng = random.Random(SEED + 4)
    arrays = _npz(base / "patch" / "result.npz")
    meta = json.loads((base / "patch" / "result.json").read_text())
    for n in range(140):
        w = _fresh(tmp_path / "w")
        m = mutate_npz(rng, arrays) if n % 2 == 0 else mutate_json(rng, meta)
        (w / "result.npz").write_bytes(m.data if n % 2 == 0 else (base / "patch" / "result.npz").read_bytes())
        (w / "result.json").write_bytes(m.data if n % 2 else (base / "patch" / "result.json").read_bytes())
        try:
            res = PatchingResult.load(w)
            res.column("final")
        except ThinklensError as err:
            assert "\n" not in str(err), m.what
        _count("patching result")


# ------------------------------------------------------------------------------------------------ run directory
def _run_dir(base: Path, tmp: Path) -> Path:
    from thinklens.jsonl import write_json
    from thinklens.rundir import RunConfig

    d = _fresh(tmp)
    write_json(d / "config.json", RunConfig(output=str(d), limit=4, n_pairs=2).to_dict())
    write_json(d / "run_state.json", {"collect": {"status": "done", "seconds": 1.0, "settings": {}}})
    (d / "patching").mkdir()
    for name in ("result.npz", "result.json", "pairs.jsonl"):
        shutil.copy(base / "patch" / name, d / "patching" / name)
    return d


def test_config_and_state(base, tmp_path):
    """config.json and run_state.json as `report` and `run` read them (load_config, load_state)."""
    from thinklens.rundir import RunConfig, RunPaths, load_config, load_state

    rng = random.Random(SEED + 5)
    clean = _run_dir(base, tmp_path / "clean")
    config = json.loads((clean / "config.json").read_text())
    state = json.loads((clean / "run_state.json").read_text())
    for n in range(300):
        d = _run_dir(base, tmp_path / "w")
        name, obj = ("config.json", config) if n % 2 == 0 else ("run_state.json", state)
        m = mutate_json(rng, obj)
        (d / name).write_bytes(m.data)
        try:
            c = load_config(d)
            assert isinstance(c, RunConfig)
            s = load_state(RunPaths(d))
            assert all(isinstance(v, dict) for v in s.values())
        except ThinklensError as err:
            assert "\n" not in str(err) and name in str(err), f"{m.what}: {err}"
        if n % 60 == 0:
            _ok(run_cli(["report", str(d)], timeout=120), f"report {name} {m.what}")
        _count(name)


def test_csv(base, tmp_path):
    rng = random.Random(SEED + 6)
    text = (base / "pairs.csv").read_text()
    for _ in range(130):
        m = mutate_csv(rng, text)
        w = _fresh(tmp_path / "w")
        (w / "c.csv").write_bytes(m.data)
        _ok(run_cli(["pairs", "prepare", "--csv", str(w / "c.csv"), "--output", str(w / "q.jsonl")]),
            f"pairs prepare {m.what}")
        _count("paper CSV")


def test_steps_jsonl(base, tmp_path):
    """steps.jsonl of a steps result, read back as the report reads it (StepsResult.load + summary)."""
    from thinklens.steps.results import StepsResult

    src = tmp_path / "steps"
    o = run_cli(["steps", "--model", "tiny-r1", "--traces", str(base / "traces.jsonl"), "--output", str(src),
                 "--rfh", "1:2", "--methods", "attention", "--quiet"])
    assert o.rc == 0, o.err[-2000:]
    records = _records(src / "steps.jsonl")
    rng = random.Random(SEED + 7)
    for _ in range(100):
        m = mutate_jsonl(rng, records, key="step")
        w = _fresh(tmp_path / "w")
        for f in src.iterdir():
            if f.is_file():
                shutil.copy(f, w / f.name)
        (w / "steps.jsonl").write_bytes(m.data)
        try:
            StepsResult.load(w).summary()
        except ThinklensError as err:
            assert "\n" not in str(err), m.what
        _count("steps JSONL")


# --------------------------------------------------------------------------------------------------- the total
def test_the_suite_ran_enough_mutations():
    total = sum(COUNTS.values())
    print(f"fuzz: {total} mutated inputs: {COUNTS}")
    assert total >= MIN_TOTAL, COUNTS


def test_the_real_exit_path(base, tmp_path):
    """A few subprocess runs: the one-line error and exit code 2 of the real process."""
    bad = tmp_path / "p.jsonl"
    bad.write_text("{not json\n")
    proc = subprocess.run([sys.executable, "-m", "thinklens", "patch", "--model", "tiny-r1", "--pairs", str(bad),
                           "--output", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no usable pairs" in proc.stderr
    (tmp_path / "h.npz").write_bytes(b"PK\x03\x04garbage")
    proc = subprocess.run([sys.executable, "-m", "thinklens", "heads", "rank", str(tmp_path / "h.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "h.npz" in proc.stderr, proc.stderr
