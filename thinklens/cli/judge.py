"""``thinklens judge``: WildBench v2 checklist scoring of each answer through an OpenAI-compatible endpoint."""
from __future__ import annotations

import argparse
import os
import sys

from thinklens.cli.common import add_quiet, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge", help="score answers with the WildBench v2 checklist judge (WB-Score)",
        description="Send each answer (the text after </think>) with its conversation history and checklist to an "
        "LLM judge using WildBench's score.v2 template; parse the 1-10 score and report WB-Score = (s - 5) x 2 "
        "with and without reasoning (mean and bootstrap 95% CI). Resumable.",
    )
    p.add_argument("file", help="trace JSONL from thinklens collect --dataset wildbench")
    p.add_argument("--output", required=True, help="judged JSONL (appended to; judged records are skipped)")
    p.add_argument("--judge-url", default=os.environ.get("THINKLENS_JUDGE_URL"),
                   help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1 (default: $THINKLENS_JUDGE_URL)")
    p.add_argument("--judge-model", help="judge model name, e.g. gpt-4o-2024-05-13 (WildBench v2's judge)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--max-words", type=int, help="shorten history/query/answer to N words before judging")
    p.add_argument("--no-json-mode", action="store_true", help="do not request response_format=json_object")
    add_quiet(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.empirical.judge import JudgeSettings, judge_file

    args = ns
    settings = JudgeSettings(url=args.judge_url or "", model=args.judge_model or "", api_key_env=args.api_key_env,
                             max_tokens=args.max_tokens, max_words=args.max_words, json_mode=not args.no_json_mode)
    summary = judge_file(args.file, args.output, settings, progress=not args.quiet)
    for line in summary.get("bad_lines", []):
        print(f"skipped {line}", file=sys.stderr)
    print_json(summary)
    return 0
