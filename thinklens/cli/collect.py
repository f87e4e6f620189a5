"""``thinklens collect``: generate traces with or without reasoning into a resumable JSONL file."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from thinklens.cli.common import print_json, to_dataclass
from thinklens.errors import ThinklensError


@dataclass
class CollectArgs:
    model: str
    dataset: str
    reasoning: str
    output: str
    dataset_file: str | None = None
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    math_instruction: bool | None = None
    prompt_style: str = "chat"
    backend: str = "transformers"
    device: str | None = None
    dtype: str | None = None
    profile: str | None = None
    quiet: bool = False
    base_url: str | None = None
    tokenizer: str | None = None
    api_key_env: str | None = None
    concurrency: int = 4
    request_timeout: float = 1800.0
    max_retries: int = 5
    endpoint: str = "auto"
    assistant_prefix: str | None = None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect", help="generate traces with or without reasoning (stage 1)",
        description="Generate one trace per problem and append it to OUTPUT (JSONL). --reasoning without forces R1's "
        "finished thinking ('<think>\\nOkay, I think I have finished thinking.\\n</think>') so the model answers "
        "directly. Rerunning with the same OUTPUT skips problems already written (resume after a crash).",
    )
    p.add_argument("--model", required=True, help="hub id, local directory or tiny-r1")
    p.add_argument("--dataset", required=True, help="math500, wildbench, arithmetic (tiny-r1's task) or a .jsonl file")
    p.add_argument("--dataset-file", help="local JSONL copy of the dataset (problem, answer, id/unique_id)")
    p.add_argument("--reasoning", required=True, choices=["with", "without"])
    p.add_argument("--output", required=True, help="trace JSONL file (appended to; existing ids are skipped)")
    p.add_argument("--limit", type=int, help="only the first N problems")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy, reproducible (default); R1's recommended sampling: 0.6 with --top-p 0.95")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and which synthetic problems are drawn")
    p.add_argument("--math-instruction", action=argparse.BooleanOptionalAction, default=None,
                   help="append the paper's ' Please reason step by step, and put your final answer within "
                   "\\boxed{}.' (default: on for math500 and files, off for arithmetic and wildbench)")
    p.add_argument("--prompt-style", choices=["chat", "paper"], default="chat",
                   help="chat: the tokenizer's chat template (R1's recommended usage); paper: the paper's exact "
                   "prompts, BOS + problem + instruction + ' <think>\\n'")
    p.add_argument("--backend", choices=["transformers", "vllm", "openai"], default="transformers",
                   help="transformers or vllm: generate in this process; openai: through an OpenAI-compatible server "
                   "(vLLM serve, SGLang, transformers serve, DeepSeek's API) at --base-url")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--dtype", help="fp32, bf16, fp16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--profile", help="model-family profile name (default: chosen from the model id)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("server (--backend openai)")
    g.add_argument("--base-url", help="API root of the server, e.g. http://127.0.0.1:8000/v1 or "
                   "https://api.deepseek.com (--model is then the served model name)")
    g.add_argument("--tokenizer", help="the served model's tokenizer (hub id, directory or tiny-r1): exact prompts in "
                   "the records, /completions for --reasoning without, local token counts")
    g.add_argument("--api-key-env", help="NAME of the environment variable holding the API key (never the key)")
    g.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    g.add_argument("--request-timeout", type=float, default=1800.0, help="seconds per request attempt (default 1800)")
    g.add_argument("--max-retries", type=int, default=5,
                   help="retries of a request on 429/5xx, timeouts and dropped connections (default 5)")
    g.add_argument("--endpoint", choices=["auto", "chat", "completions"], default="auto",
                   help="auto: /chat/completions with reasoning, /completions (exact prompt + forced thinking) "
                   "without; or one endpoint for both")
    g.add_argument("--assistant-prefix", choices=["deepseek", "continue"],
                   help="--reasoning without on the chat endpoint: continue the forced thinking as an assistant "
                   "prefix (deepseek: DeepSeek's beta 'prefix': true; continue: vLLM/SGLang continue_final_message)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.empirical.collect import GenerationSettings, collect_dataset

    args = to_dataclass(CollectArgs, ns)
    server = None
    if args.backend == "openai":
        from thinklens.empirical.backends.openai import ServerSettings

        server = ServerSettings(
            base_url=args.base_url or "", model=args.model, tokenizer=args.tokenizer, api_key_env=args.api_key_env,
            concurrency=args.concurrency, request_timeout=args.request_timeout, max_retries=args.max_retries,
            endpoint=args.endpoint, assistant_prefix=args.assistant_prefix)
    elif args.base_url or args.tokenizer or args.api_key_env or args.assistant_prefix:
        raise ThinklensError("--base-url, --tokenizer, --api-key-env and --assistant-prefix are for --backend openai")
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        batch_size=args.batch_size, math_instruction=True if args.math_instruction is None else args.math_instruction,
        prompt_style=args.prompt_style, backend=args.backend,
    )
    if server is not None:
        from thinklens.empirical.collect_server import collect_server_dataset

        summary = collect_server_dataset(
            args.dataset, reasoning=args.reasoning, output=args.output, server=server, settings=settings,
            dataset_file=args.dataset_file, limit=args.limit, profile=args.profile, model_name=args.model,
            auto_math_instruction=args.math_instruction is None, progress=not args.quiet)
    else:
        summary = collect_dataset(
            args.model, args.dataset, reasoning=args.reasoning, output=args.output, settings=settings,
            dataset_file=args.dataset_file, limit=args.limit, device=args.device, dtype=args.dtype,
            profile=args.profile, auto_math_instruction=args.math_instruction is None, progress=not args.quiet,
        )
    for err in summary.errors:
        print(f"skipped {err}", file=sys.stderr)
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if summary.n_failed:
        print(f"{summary.n_failed} request(s) failed after their retries and were written as error records: rerun "
              "the same command to retry them", file=sys.stderr)
    print_json(summary.to_dict())
    return 0
