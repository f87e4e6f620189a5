from __future__ import annotations

import json

import pytest

from thinklens.errors import ThinklensError
from thinklens.pipeline import STAGES, RunConfig, commands, load_config


def test_defaults_and_roundtrip(tmp_path):
    cfg = RunConfig(output=str(tmp_path / "run"), stages="collect, grade,report")
    assert cfg.stages == ("collect", "grade", "report")
    d = cfg.to_dict()
    json.dumps(d)  # JSON-ready
    assert RunConfig.from_dict(d) == cfg
    assert RunConfig().stages == STAGES


@pytest.mark.parametrize("kwargs, needle", [
    ({"stages": "collect,bogus"}, "bogus"),
    ({"stages": ""}, "stage"),
    ({"limit": 0}, "limit"),
    ({"n_pairs": -1}, "n_pairs"),
    ({"dtype": "int3"}, "int3"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"pairs_csv": "/nonexistent/pairs.csv"}, "pairs.csv"),
])
def test_invalid_config_names_the_problem(kwargs, needle):
    with pytest.raises(ThinklensError, match=needle):
        RunConfig(**kwargs)


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


def test_run_result_save_load_roundtrip(tmp_path):
    from thinklens.pipeline import RunResult

    res = RunResult(output=tmp_path, results={"model": "m", "evaluation": {}}, stages={"grade": {"status": "done"}})
    res.save()
    back = RunResult.load(tmp_path)
    assert back.results == res.results and back.stages == res.stages and back.report is None
    with pytest.raises(ThinklensError, match="results.json"):
        RunResult.load(tmp_path / "nothing")


def test_labelled_bars_prefix_stage_bars_only_inside(tmp_path, capsys):
    from thinklens.pipeline import RunPaths
    from thinklens.pipeline_stages import StageContext
    from thinklens.progress import bar

    ctx = StageContext(RunConfig(output=str(tmp_path)), RunPaths(tmp_path), label="[2/5] grade")
    with ctx.labelled_bars():
        list(bar(range(3), desc="grade with"))
    list(bar(range(2), desc="outside"))
    err = capsys.readouterr().err
    assert "[2/5] grade  grade with" in err and "3/3" in err
    assert "outside" in err and "[2/5] grade  outside" not in err
