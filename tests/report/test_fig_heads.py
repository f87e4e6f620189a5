"""Head-study figures and the layer animation, drawn from saved result files only (synthetic, no model)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.report.conftest import N_LAYERS, write_synthetic_run
from thinklens.attention.ablation_result import AblationResult
from thinklens.attention.debugging import DebugResult, TraceDebug
from thinklens.attention.retrieval import RetrievalScores
from thinklens.attention.tokens import TokenAttention, cue_window_control
from thinklens.errors import ThinklensError
from thinklens.report import fig_heads


def _saved_results(root):
    """The head-study files of a run directory, as the stages would write them under attention/."""
    rng = np.random.default_rng(0)
    att = root / "attention"
    scores = np.zeros((4, 8))
    scores[2, 5], scores[1, 3] = 0.9, 0.3
    RetrievalScores(scores, scores / 2, [{"passed": True}] * 3, "synthetic").save(att / "retrieval.json")
    correct = np.ones((10, 5), dtype=bool)
    correct[:6, 1] = False
    correct[0, 3] = False
    AblationResult([f"t{i}" for i in range(10)], [(2, 5), (1, 3)], [[(2, 1), (1, 0)], [(2, 2), (1, 4)],
                   [(2, 7), (1, 6)]], correct, -rng.uniform(0, 3, (10, 5)), np.full(10, 20),
                   settings={"mode": "mean"}).save(att / "ablation")
    steps = ["7+5=12", "12*3=36", "Final answer is 35."]
    DebugResult([TraceDebug("bad<1>", False, "36", "35", [(0, 6), (7, 14), (15, 34)], steps,
                            np.array([0.1, 0.2, 0.6], dtype=np.float32), [2], [1]),
                 TraceDebug("good", True, "36", "36", [(0, 6), (7, 14), (15, 34)], steps[:2] + ["Final answer is 36."],
                            np.array([0.1, 0.2, 0.6], dtype=np.float32), [1, 2], [1, 2])],
                [(2, 5), (1, 3)], "synthetic").save(att / "debug")
    text = "7+5=13\nWait, 7+5=12\n12*3=36\nBut 36.\n"
    items = [TokenAttention(f"t{i}", [(2, 5)], list(text), rng.uniform(0, 1, (1, len(text))),
                            np.zeros(len(text), dtype=bool)) for i in range(5)]
    cue_window_control(items, ("Wait", "But"), n_bootstrap=100).save(att)
    return root


@pytest.fixture(scope="module")
def run_with_heads(tmp_path_factory):
    return _saved_results(write_synthetic_run(tmp_path_factory.mktemp("heads") / "run"))


@pytest.mark.parametrize("name", ["plot_retrieval", "plot_ablation", "plot_cue_control"])
def test_figures_from_a_run_directory(run_with_heads, tmp_path, name):
    out = tmp_path / f"{name}.png"
    getattr(fig_heads, name)(run_with_heads, out)
    assert out.exists() and out.stat().st_size > 5000


def test_debug_fragment_marks_values_and_escapes(run_with_heads, tmp_path):
    frag = fig_heads.debug_fragment(run_with_heads, tmp_path / "debug.html")
    assert "bad&lt;1&gt;" in frag and "bad<1>" not in frag
    assert "<b style='color:#c00'>35</b>" in frag and "<b style='color:#070'>36</b>" in frag
    assert "top RFH step" in frag and "<script" not in frag
    assert "good" not in frag  # only incorrect traces by default
    assert "good" in fig_heads.debug_html(run_with_heads / "attention" / "debug", include_correct=True)
    assert (tmp_path / "debug.html").read_text() == frag


def test_missing_file_is_a_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fig_heads.plot_ablation(tmp_path, tmp_path / "x.png")


def test_gif_has_one_frame_per_layer(tmp_path):
    from PIL import Image

    from thinklens.report.animation import layer_animation

    run = write_synthetic_run(tmp_path / "run")
    res = layer_animation(run, formats=("gif", "mp4"))
    assert res["frames"] == N_LAYERS
    with Image.open(res["gif"]) as im:
        assert im.n_frames == N_LAYERS
    assert res["mp4"] is not None or any("ffmpeg" in n for n in res["notes"])
    # only the attention half: still one frame per layer; nothing at all: a clear error
    import shutil

    shutil.rmtree(run / "patching")
    assert layer_animation(run, tmp_path / "a", formats=("gif",))["frames"] == N_LAYERS
    (run / "attention" / "head_scores.npz").unlink()
    with pytest.raises(ThinklensError, match="neither"):
        layer_animation(run, tmp_path / "b", formats=("gif",))


@pytest.mark.slow
def test_report_cli_writes_animations(tmp_path, capsys):
    from thinklens.cli.main import main

    run = write_synthetic_run(tmp_path / "run")
    assert main(["report", str(run), "--animations"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["animations"]["frames"] == N_LAYERS and (run / "animations" / "layers.gif").exists()
    assert (run / "report.html").exists()
