"""The real-model study of docs/case-study-qwen-1.5b.md, one resumable command.

Why a script: the study is three ``thinklens run`` invocations on the provisioned Qwen2.5-Coder-1.5B-Instruct
(R1-Distill-Qwen-1.5B's architecture) with prompted thinking, greedy decoding and seed 0, and a researcher should
reproduce it with one line. Each part is an ordinary run directory, so a rerun of this command resumes where it
stopped (finished stages are skipped, partial ones continue), and ``study.json`` keeps the wall time and peak memory
of every invocation of every part, which the case study sums::

    python examples/qwen-1.5b/study.py                      # runs/qwen15-study/{arithmetic,patching,math500}
    python examples/qwen-1.5b/study.py --dry-run            # the commands, nothing run

The parts, cheapest first, so that an interrupted study has the paper's three questions answered early:

* ``arithmetic``: 100 arithmetic problems with and without reasoning, attention, Reasoning-Focus Heads, RFH
  ablation, failure debugging, the step methods on 10 traces and the hinted twins of 30 problems per hint family;
* ``patching``: the paper's contrastive QA pairs (every row of the CSV; the paper's filter keeps the pairs the
  model answers correctly, each rejection with its reason), patched per layer and token;
* ``math500``: the 100 MATH-500 problems that R1-Distill-Qwen-1.5B answered in the reference traces (their
  ``problem``/``gold_answer``; the problem file is written into the study directory, never the repository),
  with and without reasoning, attention, RFHs, failure debugging and the hinted twins of 20 problems per family
  (problems the model is unsure of, where Chen et al. see hints taken; on arithmetic it took 1 of 90). RFH ablation
  runs on ``arithmetic`` only: it regenerates every answer six times, ~30 min on the short arithmetic traces and
  hours on these.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provision import ProvisionError, provision  # noqa: E402

REFERENCE = HERE.parents[1].parent / "shared" / "reference"
REFERENCE_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"  # whose MATH-500 problems the study uses
COMMON = ["--dtype", "bf16", "--thinking", "prompted", "--on-unfinished", "force-close", "--seed", "0",
          "--temperature", "0", "--batch-size", "8", "--min-usable", "0"]


def parts(out: Path, reference: Path) -> dict[str, list[str]]:
    """Each part's ``thinklens run`` arguments after the common ones."""
    return {
        "arithmetic": ["--dataset", "arithmetic", "--limit", "100", "--max-new-tokens", "384", "--n-pairs", "0",
                       "--steps-limit", "10", "--faithfulness-problems", "30", "--hint-mechanism"],
        "patching": ["--dataset", "arithmetic", "--limit", "100", "--max-new-tokens", "384",
                     "--pairs-csv", str(reference / "contrastive_qa_pairs.csv"), "--n-pairs", "103",
                     "--stages", "patching,report"],
        "math500": ["--dataset", str(out / "math500-100.jsonl"), "--limit", "100", "--max-new-tokens", "1024",
                    "--n-pairs", "0", "--faithfulness-problems", "20", "--hint-mechanism",
                    "--stages", "collect,grade,evaluate,attention,heads,debugging,faithfulness,report"],
    }


def write_math500(reference: Path, path: Path) -> int:
    """The reference model's 100 MATH-500 problems, in the file's order, as a problem file; returns the count."""
    rows = [json.loads(line) for line in (reference / "r1_math500_traces.jsonl").read_text().splitlines() if line]
    keep = [r for r in rows if r.get("model") == REFERENCE_MODEL and r.get("reasoning") == "with"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"id": r["unique_id"], "problem": r["problem"], "answer": r["gold_answer"],
                                       "subject": r.get("subject"), "level": r.get("level"),
                                       "reference_is_correct": r.get("paper_is_correct")}) + "\n" for r in keep))
    tmp.replace(path)
    return len(keep)


def run_part(name: str, argv: list[str], out: Path) -> dict:
    """One invocation of one part; its wall time, CPU time and peak RSS (of that child alone, by ``wait4``)."""
    log = (out / f"{name}.log").open("a")
    start = time.time()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    log.close()
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
            "wall_s": round(time.time() - start, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "returncode": os.waitstatus_to_exitcode(status)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default="runs/qwen15-study", help="study directory (default runs/qwen15-study)")
    ap.add_argument("--reference", default=str(REFERENCE), help="../shared/reference (pairs CSV, MATH-500 traces)")
    ap.add_argument("--parts", default="arithmetic,patching,math500", help="comma-separated subset, in order")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    out, reference = Path(args.output), Path(args.reference)
    every = parts(out, reference)
    names = [n for n in args.parts.split(",") if n]
    unknown = [n for n in names if n not in every]
    if unknown:
        print(f"error: unknown part(s) {', '.join(unknown)}; use {', '.join(every)}", file=sys.stderr)
        return 2
    if not (reference / "contrastive_qa_pairs.csv").is_file():
        print(f"error: {reference} has no contrastive_qa_pairs.csv; pass --reference DIR", file=sys.stderr)
        return 2
    try:
        model = str(provision(quiet=True)) if not args.dry_run else "$MODEL"
    except (ProvisionError, ImportError) as err:
        print(f"error: provisioning the model failed: {err}", file=sys.stderr)
        return 1
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        if "math500" in names:
            write_math500(reference, out / "math500-100.jsonl")
    record_path = out / "study.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"parts": {}}
    for name in names:
        cmd = [sys.executable, "-m", "thinklens", "run", "--model", model, *COMMON, *every[name],
               "--output", str(out / name)]
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        seg = run_part(name, cmd, out)
        record["parts"].setdefault(name, {"command": cmd[2:], "invocations": []})["invocations"].append(seg)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{name}: {seg}", flush=True)
        if seg["returncode"] != 0:
            print(f"error: part {name} failed (see {out / (name + '.log')}); rerun to resume", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
