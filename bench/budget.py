"""The model chosen within a budget (issue 33): `graft train DATA --budget Nm` against the default run, and
against the best candidate in hindsight, on the ELPV sample.

    python bench/budget.py [--data ELPV] [--budgets 5 15 30] [--seeds 0 1] [--warm]

For each split seed, in one sitting: the default run (`graft train DATA --seed S`, the baseline), then one
budgeted run a budget (`--budget Nm --seed S`). Each run goes through the CLI from an empty Graft cache
(its own GRAFT_HOME: nothing read before, every ONNX export paid; `--warm` shares one cache instead).
After a budgeted run, every candidate its leaderboard tried is scored on the test photos here, its head
fitted again exactly as the run fitted it (the same cached features, the same deterministic fit: its
validation accuracy must match the leaderboard's), so the best candidate in hindsight is known; the
regret is its test accuracy less the kept model's. Printed: the kept model, its test accuracy and
balanced accuracy, the default's, the best in hindsight, the regret, and the time used against the budget
(the leaderboard's, from the start of the run to the end of its scoring, and the CLI process's wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def train(data: Path, runs: Path, home: Path, *args: str) -> tuple[Path, float]:
    """One CLI training in its own Graft cache → (the run folder, wall seconds of the process)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "core", "train", str(data), "--runs", str(runs), *args],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "GRAFT_HOME": str(home)})
    wall = time.perf_counter() - started
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    run_id = result.stdout.strip().splitlines()[-1].split()[0].split("=", 1)[1]
    return runs / run_id, wall


def test_figures(run: Path) -> tuple[float, float]:
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics["accuracy"], metrics["balanced_accuracy"]


def hindsight(run: Path, home: Path) -> list[dict]:
    """Each tried candidate's test accuracy and balanced accuracy, its head fitted again on the run's cached
    features (a plain candidate: the pooled view's last columns, as the run fitted it)."""
    os.environ["GRAFT_HOME"] = str(home)
    from sklearn.metrics import balanced_accuracy_score

    from core.models import backbones
    from core.models.features import FeatureCache
    from core.models.preprocess import eval_transform
    from core.models.probe import fit_head
    from core.runs.folder import RunDir
    from core.train.loop import class_weights

    folder = RunDir(run)
    board, config, card = folder.leaderboard(), folder.read_config(), folder.card()
    split = folder.manifest(card.labels)
    index = {c: i for i, c in enumerate(card.labels)}
    weights = class_weights(split.counts()["train"].tolist(), config.get("class_weights", "auto"))
    scored = []
    for entry in (e for e in board["candidates"] if e["status"] == "tried"):
        view = "pooled" if entry["features"] == "plain" and backbones.rich_view_available(entry["backbone"]) \
            else entry["features"]
        model = backbones.create(entry["backbone"], len(card.labels), "head", features=view)
        prep = backbones.preprocessing_for(entry["backbone"], entry["input_size"])
        cache = FeatureCache(model.backbone, prep)
        parts = {}
        for name in ("train", "val", "test"):
            rows = split.manifest[split.manifest["split"] == name]
            x, ok = cache.features([card.data_root / p for p in rows["path"]], rows["sha1"].tolist(), "eval",
                                   eval_transform(prep), log=None)
            y = np.array([index[c] for c in rows["label"]])
            x = x[:, -backbones.get_spec(entry["backbone"]).feature_dim:] if view != entry["features"] else x
            parts[name] = (x[ok], y[ok])
        (tx, ty), (vx, vy), (sx, sy) = parts["train"], parts["val"], parts["test"]
        head = fit_head(tx, ty, vx, vy, len(card.labels), weights.numpy()[ty] if weights is not None else None)
        predicted = head.logits(sx).argmax(1)
        scored.append({"name": entry["name"], "val_acc": head.val_acc, "board_val_acc": entry["val_acc"],
                       "test_acc": float((predicted == sy).mean()), "test_bal": float(balanced_accuracy_score(sy, predicted))})
    return scored


def main() -> None:
    from core.data import samples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="default: the ELPV sample")
    parser.add_argument("--budgets", type=float, nargs="+", default=[5, 15, 30], help="minutes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--warm", action="store_true", help="one feature cache for every run (default: each cold)")
    args = parser.parse_args()
    data = args.data or samples.fetch("elpv")
    work = Path(tempfile.mkdtemp(prefix="bench-budget-"))
    shared = work / "home"

    def home(name: str) -> Path:
        return shared if args.warm else work / f"home-{name}"

    print(f"data {data}; threads GRAFT_THREADS={os.environ.get('GRAFT_THREADS', 'all cores')}; "
          f"{'warm' if args.warm else 'cold'} caches; {time.strftime('%Y-%m-%d %H:%M')}")
    lines = ["| budget | seed | kept (at the end) | test acc / bal | default test acc / bal | best in hindsight | "
             "regret | used / budget (s) | process wall (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for seed in args.seeds:
        default_run, default_wall = train(data, work / "runs", home(f"default-{seed}"), "--seed", str(seed))
        default = test_figures(default_run)
        print(f"seed {seed}: default {default[0]:.3f} / {default[1]:.3f} in {default_wall:.0f} s", flush=True)
        for minutes in args.budgets:
            cache = home(f"{minutes:g}-{seed}")
            run, wall = train(data, work / "runs", cache, "--budget", f"{minutes:g}m", "--seed", str(seed))
            board = json.loads((run / "leaderboard.json").read_text())
            acc, bal = test_figures(run)
            scored = hindsight(run, cache)
            for s in scored:  # the same fit as the run's: the leaderboard's validation figure again
                if abs(s["val_acc"] - s["board_val_acc"]) > 1e-9:
                    print(f"  note: {s['name']} refitted to validation {s['val_acc']:.4f}, leaderboard "
                          f"{s['board_val_acc']:.4f}")
            final = board.get("final") or {}
            ending = f"{board['kept']}" + (" then fine-tuned" if final.get("fine_tuned") else "") + \
                (f" (the model at the end: {final['stage']})" if final.get("stage") else "")
            candidates = scored + [{"name": ending + " (the run's model)", "test_acc": acc, "test_bal": bal}]
            top = max(candidates, key=lambda s: s["test_acc"])
            for s in scored:
                print(f"  {minutes:g} min seed {seed}: {s['name']}: val {s['val_acc']:.3f}, test {s['test_acc']:.3f} / "
                      f"{s['test_bal']:.3f}", flush=True)
            lines.append(f"| {minutes:g} min | {seed} | {ending} | {acc:.3f} / {bal:.3f} | {default[0]:.3f} / "
                         f"{default[1]:.3f} | {top['name']} {top['test_acc']:.3f} | {top['test_acc'] - acc:+.3f} | "
                         f"{board.get('used_s', float('nan')):.0f} / {board['budget_s']:.0f} | {wall:.0f} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
