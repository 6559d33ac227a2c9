"""How often the unfamiliar-photo detector flags ordinary photos, and how often photos of other things
(issue 29).

    python bench/unfamiliar.py [--run RUN_DIR] [--data ELPV_FOLDER]

Trains a default run on the ELPV sample (or takes --run) and prints the share flagged unfamiliar:
- ordinary unseen photos of the dataset's kind: the run's test photos (goal ≤ 2 %);
- photos of other things, in colour and in grey: generated drawings, scikit-learn's two sample photos
  and crops of them, noise (and Fashion-MNIST when its sample is fetched) (goal ≥ 95 % each);
for the product's threshold (the 99th percentile of validation and left-out training distances) and,
as the baseline in the same run, the earlier one (95 % of the validation photos familiar).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from trust import far_set, run_features, scores, train  # bench/trust.py: run as a script, bench/ is on the path

from core.data.samples import fetch
from core.deploy.predict import Predictor
from core.runs.folder import RunDir
from core.trust import familiar


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=None, help="a trained run's folder (default: train one on --data)")
    parser.add_argument("--data", default=None, help="the ELPV folder (default: the sample, fetched once)")
    args = parser.parse_args()
    if args.run:
        run_dir = Path(args.run)
    else:
        data = Path(args.data) if args.data else fetch("elpv", progress=False)
        run_dir = train(data, Path(tempfile.mkdtemp(prefix="unfamiliar-runs-")), "unfamiliar: default")
    predictor, run = Predictor.from_run(run_dir), RunDir(run_dir)
    manifest = run.manifest().manifest
    test, _ = scores(predictor, [run.card().data_root / p for p in manifest[manifest["split"] == "test"]["path"]])
    val_feats = run_features(run_dir, "val")[0]
    val = predictor.familiarity.distance(val_feats)
    width = predictor.familiarity.train.shape[1]  # the network's own pooled features (the last columns)
    product = familiar.fit(run_features(run_dir, "train")[0][:, -width:], val_feats[:, -width:]).threshold
    colour = far_set()
    far = {"other things, in colour": scores(predictor, colour)[0],
           "the same, in grey": scores(predictor, [i.convert("L").convert("RGB") for i in colour])[0]}
    rules = {"product: 99th percentile of validation + left-out training": product,
             "baseline: 95 % of validation familiar": float(np.quantile(val, 0.95))}
    print(f"run {run_dir.name}: {len(test)} test photos, {len(val)} validation photos, "
          f"{len(colour)} photos of other things")
    print("| threshold | value | test photos flagged (goal ≤ 2 %) | "
          + " | ".join(f"{k} flagged (goal ≥ 95 %)" for k in far) + " |")
    print("|---|---|---|" + "---|" * len(far))
    for name, threshold in rules.items():
        cells = [f"{np.mean(d > threshold):.1%}" for d in far.values()]
        print(f"| {name} | {threshold:.4f} | {np.mean(test > threshold):.1%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
