"""The saved result of a faithfulness study: ``summary.json`` (settings, rates per hint family with CIs, the mechanism
summary, notes) and ``pairs.jsonl`` (one row per hinted twin), beside the twins' traces (``traces/``) and the
mechanism arrays (``mechanism/``) of the same directory (``RUN/faithfulness/`` in a run).

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> r = FaithfulnessResult({"families": {}, "overall": {"n_pairs": 1}}, [{"id": "p::metadata", "label": "ignored"}])
>>> FaithfulnessResult.load(r.save(d)).labels()
{'p::metadata': 'ignored'}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.jsonl import write_jsonl

SUMMARY_FILE = "summary.json"
PAIRS_FILE = "pairs.jsonl"
MECHANISM_DIR = "mechanism"


@dataclass
class FaithfulnessResult:
    """What a faithfulness study found: ``summary`` (JSON-ready: ``settings``, ``families`` {F: rates},
    ``overall``, ``mechanism``, ``notes``) and ``rows`` (the lines of ``pairs.jsonl``).

    >>> import thinklens as tl
    >>> res = tl.FaithfulnessResult({"families": {"metadata": {"n_pairs": 2, "hint_taking": {"rate": 0.5}}}})
    >>> [(r["family"], r["n_pairs"], r["hint_taking"]) for r in res.table()]
    [('metadata', 2, 0.5)]
    """

    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def labels(self) -> dict[str, str]:
        """``{hinted twin id: label}`` (faithful | unfaithful | ignored | other)."""
        return {str(r["id"]): str(r.get("label")) for r in self.rows}

    def table(self) -> list[dict[str, Any]]:
        """One row per hint family (and ``all``): pairs, hint-taking rate, faithfulness score, normalized score, with
        95% CIs: what the report's table and ``thinklens faithfulness`` print."""
        fams = dict(self.summary.get("families") or {})
        if self.summary.get("overall"):
            fams["all"] = self.summary["overall"]
        out = []
        for name, s in fams.items():
            ht, fs = s.get("hint_taking") or {}, s.get("faithfulness_score") or {}
            out.append({"family": name, "n_pairs": s.get("n_pairs"), "n_usable": s.get("n_usable"),
                        "n_hint_taken": s.get("n_hint_taken"), "hint_taking": ht.get("rate"),
                        "hint_taking_ci95": ht.get("ci95"), "faithfulness_score": fs.get("rate"),
                        "faithfulness_ci95": fs.get("ci95"),
                        "normalized_score": (s.get("normalization") or {}).get("normalized_score"),
                        "labels": s.get("labels")})
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``summary.json`` and ``pairs.jsonl`` (each replaced atomically); returns the directory."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_jsonl(d / PAIRS_FILE, self.rows)
        tmp = d / (SUMMARY_FILE + ".tmp")
        tmp.write_text(json.dumps(self.summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(d / SUMMARY_FILE)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> FaithfulnessResult:
        """Read a saved result (bad lines of ``pairs.jsonl`` are one-line errors naming file and line)."""
        from thinklens.jsonl import read_jsonl

        d = Path(directory)
        try:
            summary = json.loads((d / SUMMARY_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            summary = None
        except (ValueError, UnicodeDecodeError) as err:
            raise ThinklensError(f"{d / SUMMARY_FILE}: not valid JSON ({err})") from None
        if not isinstance(summary, dict):
            raise ThinklensError(f"{d / SUMMARY_FILE} not found or not a JSON object: run `thinklens faithfulness`")
        rows = []
        if (d / PAIRS_FILE).exists():
            for line in read_jsonl(d / PAIRS_FILE):
                if line.error is not None:
                    raise ThinklensError(f"{line.where}: {line.error}")
                rows.append(dict(line.record or {}))
        return cls(summary, rows)


__all__ = ["MECHANISM_DIR", "PAIRS_FILE", "SUMMARY_FILE", "FaithfulnessResult"]
