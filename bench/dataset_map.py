"""The dataset map's projection: UMAP (the product's choice) against scikit-learn's t-SNE, in one sitting.

    python bench/dataset_map.py [--data ELPV]

The features of every photo of the folder come through the feature cache (the default backbone's
plain view, as the label check reads them; the first run computes them), then PCA to 50 dimensions.
Printed: the PCA, UMAP's first fit in this process (it includes numba's compilation, paid once per
server), UMAP warm (the product's settings), and t-SNE (PCA init, perplexity 30, the cores Graft may
use), with the ratio t-SNE / UMAP warm. Other work on the machine slows both alike: read the ratio.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a dataset folder (default: the ELPV sample)")
    args = parser.parse_args()
    from core.base.runtime import configure_threads, cpu_count
    from core.data import catalog, samples
    from core.evaluate.dataset_map import PCA_DIMS, project
    from core.trust.audit import dataset_features

    configure_threads()
    index = catalog.scan(args.data or samples.fetch("elpv", progress=False))
    feats, ok = dataset_features(index, progress=True)
    feats = feats[ok]
    print(f"{len(feats)} photos, {feats.shape[1]} features, {cpu_count()} cores for Graft")
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    start = time.perf_counter()
    reduced = PCA(n_components=PCA_DIMS, random_state=0).fit_transform(feats)
    print(f"PCA to {PCA_DIMS}: {time.perf_counter() - start:.1f} s")
    timings = {}
    for name in ("UMAP first fit (with compilation)", "UMAP warm"):
        start = time.perf_counter()
        project(feats)
        timings[name] = time.perf_counter() - start
        print(f"{name} (PCA included): {timings[name]:.1f} s")
    start = time.perf_counter()
    TSNE(n_components=2, init="pca", perplexity=30, random_state=0, n_jobs=cpu_count()).fit_transform(reduced)
    timings["t-SNE"] = time.perf_counter() - start
    print(f"t-SNE (after PCA): {timings['t-SNE']:.1f} s")
    print(f"ratio t-SNE / UMAP warm: {timings['t-SNE'] / timings['UMAP warm']:.1f}x; "
          f"{np.round(timings['UMAP warm'], 1)} s warm for the map of {len(feats)} photos")


if __name__ == "__main__":
    main()
