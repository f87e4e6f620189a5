from __future__ import annotations

import json

import pytest

from thinklens.errors import ThinklensError
from thinklens.rundir import RunConfig, RunPaths, load_config
from thinklens.stages.registry import STAGES, commands


def test_defaults_and_roundtrip(tmp_path):
    cfg = RunConfig(output=str(tmp_path / "run"), stages="collect, grade,report")
    assert cfg.stages == ("collect", "grade", "report")
    d = cfg.to_dict()
    json.dumps(d)  # JSON-ready
    assert RunConfig.from_dict(d) == cfg
    assert RunConfig().stages == ()  # all stages
    assert [s.name for s in STAGES][0] == "collect" and STAGES[-1].name == "report"


def test_config_json_of_version_0_1_loads(tmp_path):
    """Run directories written before the option groups: flat model and generation fields."""
    old = {"model": "tiny-r1", "dataset": "arithmetic", "limit": 5, "output": "x", "seed": 1, "device": "cpu",
           "dtype": None, "device_map": None, "n_pairs": 2, "pairs_csv": None, "stages": ["collect"],
           "batch_size": 4, "max_new_tokens": 12, "top_k": 10, "n_bootstrap": 1000}
    cfg = RunConfig.from_dict(old)
    assert cfg.model.name == "tiny-r1" and cfg.model.device == "cpu"
    assert cfg.generation.max_new_tokens == 12 and cfg.generation.batch_size == 4 and cfg.generation.seed == 1


@pytest.mark.parametrize("kwargs, needle", [
    ({"limit": 0}, "limit"),
    ({"n_pairs": -1}, "n_pairs"),
    ({"model": {"name": "tiny-r1", "dtype": "int3"}}, "int3"),
    ({"generation": {"max_new_tokens": 0}}, "max_new_tokens"),
    ({"pairs_csv": "/nonexistent/pairs.csv"}, "pairs.csv"),
])
def test_invalid_config_names_the_problem(kwargs, needle):
    with pytest.raises(ThinklensError, match=needle):
        RunConfig(**kwargs)


def test_unknown_stage_is_refused_before_anything_runs(tmp_path):
    from thinklens.pipeline import run

    with pytest.raises(ThinklensError, match="bogus"):
        run(RunConfig(output=str(tmp_path / "r"), stages="collect,bogus"))
    assert not (tmp_path / "r" / "config.json").exists()


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ThinklensError, match="colour"):
        RunConfig.from_dict({"colour": "red"})


def test_commands_name_every_stage_and_the_directory(tmp_path):
    cfg = RunConfig(output=str(tmp_path / "r"), limit=7, seed=3)
    cmds = commands(cfg)
    for stage in ("collect", "grade", "evaluate", "attention", "heads", "patching", "report", "run"):
        assert cmds[stage].startswith("thinklens ")
        assert str(tmp_path / "r") in cmds[stage]
    assert "--limit 7" in cmds["collect"] and "--seed 3" in cmds["collect"]


def test_load_config_errors_on_non_run_directory(tmp_path):
    with pytest.raises(ThinklensError, match="config.json"):
        load_config(tmp_path)


def test_run_result_load(tmp_path):
    from thinklens.jsonl import write_json
    from thinklens.pipeline import RunResult

    write_json(tmp_path / "results.json", {"model": "m", "evaluation": {}})
    write_json(tmp_path / "run_state.json", {"grade": {"status": "done"}})
    back = RunResult.load(tmp_path)
    assert back.results == {"model": "m", "evaluation": {}} and back.stages == {"grade": {"status": "done"}}
    assert back.report is None
    with pytest.raises(ThinklensError, match="results.json"):
        RunResult.load(tmp_path / "nothing")


def test_flags_are_derived_from_the_config_and_round_trip():
    """`thinklens run` flags come from RunConfig and its option groups; the reproduce command rebuilds the config."""
    import shlex

    from thinklens.cli.flags import build
    from thinklens.cli.main import build_parser

    cfg = RunConfig(model={"name": "tiny-r1", "device": "cpu"}, limit=7, seed=3, top_k=3, output="r",
                    generation={"max_new_tokens": 64, "temperature": 0.6, "math_instruction": False})
    argv = shlex.split(commands(cfg)["run"])[1:]
    assert build(RunConfig, build_parser().parse_args(argv)) == cfg
    assert "--top-k 3" in commands(cfg)["run"] and "--no-math-instruction" in commands(cfg)["run"]


def test_labelled_bars_prefix_stage_bars_only_inside(tmp_path, capsys):
    from thinklens.progress import bar
    from thinklens.stages.context import StageContext

    ctx = StageContext(RunConfig(output=str(tmp_path)), RunPaths(tmp_path), label="[2/5] grade")
    with ctx.labelled_bars():
        list(bar(range(3), desc="grade with"))
    list(bar(range(2), desc="outside"))
    err = capsys.readouterr().err
    assert "[2/5] grade  grade with" in err and "3/3" in err
    assert "outside" in err and "[2/5] grade  outside" not in err
