"""The best model within a time budget: `graft train DATA --budget 10m` (the Train page's "Find the best
model in … minutes").

The budget is spent in two parts, both inside the one run (`session.fit` calls `explore` first):

1. **Candidates, frozen.** Every backbone whose weights are on this machine reads the training and
   validation photos once (through the feature cache) at its own photo size and at a larger one, on
   the pooled view (EfficientNet-Lite) or its plain view, and for EfficientNet-Lite on the rich view (8
   orientations); a last layer is fitted to convergence on each (`probe.fit_head`). The plain view of
   an EfficientNet-Lite costs no reading of its own: it is the pooled view's last columns. The default
   model goes first (a model at once); the others in order of expected gain a second: a prior gain
   (PRIORS, from docs/benchmarks.md) over a cost estimated from the photos still to read, the measured
   time a photo (the first reading's pace, scaled by each network's size) and the measured head fit.
   A candidate whose estimate does not fit in the time left, keeping back what the rest of the run
   needs, is skipped; one that overruns it is cut.
2. **The kept candidate, then fine-tuned.** The cheapest candidate whose validation score the best's
   does not beat by more than noise (`within_noise`: the product's margin and McNemar's test on the
   validation photos) is kept, and the run goes on as a
   time-limited run of it (`stages.py`: its head on its cached view, then fine-tuning its network's
   last stages) until the budget's end, less the time to score the model.

Everything is chosen on the validation photos; the test photos are only read to score the model kept.
`leaderboard.json` in the run folder records every candidate (validation accuracy with its 95 %
interval, milliseconds a photo on this machine, model size, seconds spent), the Pareto front, the
choice, and after the run what the fine-tuning gave and the time used against the budget.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from core.base import distributed
from core.base.errors import BadInput, log
from core.base.storage import cache_home
from core.evaluate.stats import mcnemar, wilson
from core.models import backbones
from core.models.choices import DEFAULT_BACKBONE, backbone_title
from core.models.features import cache_key, cached_count, onnx_backbone, onnx_reads
from core.models.probe import clearly_better, fit_head
from core.runs.folder import RunDir, data_root
from core.train.batches import feature_batches
from core.train.config import TrainConfig
from core.train.estimate import (
    ONNX_SPEEDUP,
    reading_factor,
    seconds_per_image,
)
from core.train.loop import class_weights, load_split
from core.train.stages import SMALL
from core.train.steps import StopTraining

# Expected gain in validation points over the default (Lite0, its size, pooled view), the order's prior:
# from docs/benchmarks.md on ELPV (the rich view +2.7 test points; Lite0 at 256 px +1 validation point;
# Lite2 +2.5 on one view with a logistic regression, less with the fitted head). Rough by design: the
# measured figures decide, the priors only order what is tried first.
PRIORS = {"efficientnet_lite0": 0.0, "efficientnet_lite1": 0.7, "efficientnet_lite2": 1.0}
OTHER_PRIOR, SIZE_PRIOR, RICH_PRIOR, PLAIN_PRIOR = 0.5, 0.5, 2.5, -0.5
LARGER = 8 / 7  # the second photo size: this much larger, in steps of 32 px (224 → 256, 240 → 288)
RUN_OVERHEAD = 20.0  # seconds the kept candidate's run needs beside its head fit and its scoring: the model
# built, the cached features loaded, ten epochs of its last layer on them
MARGIN = 1.2  # a candidate's estimate with this much to spare
SCORING_MARGIN = 2.0  # scoring the test photos at the end, against reading as many: the unfamiliar-photo
# detector, the predictions and the model card written beside it
TIMING_BUILD, TIMING_PHOTOS = 5.0, 200  # what timing a network for fine-tuning costs (`estimate.seconds_per_image`
# at two sizes: the network built twice, forward and backward passes on batches of 8; measured under load)
VIEWS = {"plain": "plain view", "pooled": "pooled view", "rich": "rich view (8 orientations)"}


@dataclass(frozen=True)
class Candidate:
    """A frozen model tried: a backbone, a photo size and a view; `twin` names the pooled candidate whose
    reading a plain one shares (its last columns)."""

    backbone: str
    input_size: int
    features: str
    prior: float
    twin: str | None = None

    @property
    def name(self) -> str:
        return f"{backbone_title(self.backbone)} · {self.input_size} px · {VIEWS[self.features]}"

    @property
    def reads(self) -> str:
        """The candidate whose reading gives this one its features (itself, or the pooled twin)."""
        return self.twin or self.name


def candidates(config: TrainConfig) -> list[Candidate]:
    """Every frozen candidate this machine can read: each backbone whose weights are here, at its own
    photo size and a larger one, on its one-reading view, and the rich view for EfficientNet-Lite; the
    default first. A pooled candidate read brings its plain twin (`twin_of`)."""
    found: list[Candidate] = []
    for spec in backbones.list_backbones():
        if not backbones.weights_available(spec.name):
            continue
        native, lite = spec.preprocessing.input_size, spec.family == "lite"
        prior, view = PRIORS.get(spec.name, OTHER_PRIOR), "pooled" if lite else "plain"
        larger = int(round(native * LARGER / 32) * 32)
        for size, gain in ((native, prior), (larger, prior + SIZE_PRIOR)):
            found.append(Candidate(spec.name, size, view, gain))
        if lite:
            found.append(Candidate(spec.name, native, "rich", prior + RICH_PRIOR))
    if not found:
        raise BadInput("no backbone's pretrained weights are on this machine: `graft backbones` says where to put them")
    default = next((c for c in found if c.backbone == DEFAULT_BACKBONE and c.features == "pooled"), found[0])
    return [default] + [c for c in found if c is not default]


def twin_of(c: Candidate) -> Candidate:
    """The plain view of a pooled candidate: the network's own pooled features, the pooled view's last
    columns (no reading of its own while exploring)."""
    return Candidate(c.backbone, c.input_size, "plain", c.prior + PLAIN_PRIOR, twin=c.name)


def relative_cost(c: Candidate) -> float:
    """A candidate's reading cost against the default's, before anything is timed: parameters times
    pixels, times the view's readings (ordering only)."""
    spec = backbones.get_spec(c.backbone)
    return max(spec.params_m, 1.0) * (c.input_size / 224) ** 2 * reading_factor(c.features)


def photo_seconds(backbone: str, freeze: str, input_size: int | None, features: str = "plain") -> float:
    """Seconds the network takes a photo on this machine, as the product scores one: a frozen backbone's
    view through ONNX Runtime (`estimate.seconds_per_image`, the rich view's 8 orientations included), a
    fine-tuned network through ONNX Runtime too (as evaluation and the export score it)."""
    if input_size == backbones.preprocessing_for(backbone).input_size:
        input_size = None  # the network's own size: the timing the time-limited stages already made
    if freeze == "head":
        return seconds_per_image(backbone, "head", input_size)[1] * reading_factor(features)
    return seconds_per_image(backbone, freeze, input_size)[1] / ONNX_SPEEDUP


class Pace:
    """What has been measured so far, to estimate a candidate before it starts: seconds a photo read (the
    whole feature pass: decoding, the network, the cache) per unit of `relative_cost`, an ONNX export, a
    head fit per feature."""

    def __init__(self) -> None:
        self.per_cost: float | None = None  # seconds a photo read, per unit of relative cost
        self.export_s, self.fit_per_dim = 0.0, None

    def heard(self, c: Candidate, seconds_a_photo: float) -> None:
        self.per_cost = seconds_a_photo / relative_cost(c)

    def per_photo(self, c: Candidate) -> float:
        """Seconds a photo of `c`'s reading: the last measured pace scaled by its relative cost (a guess of
        50 ms for the default before anything is measured)."""
        return (self.per_cost or 0.05 / relative_cost(Candidate(DEFAULT_BACKBONE, 224, "pooled", 0))) * relative_cost(c)

    def reading(self, c: Candidate, missing: int) -> float:
        return max(missing, 0) * self.per_photo(c)

    def fit(self, dim: int) -> float:
        return dim * (self.fit_per_dim or 0.01)

    def rough(self, c: Candidate, photos: int) -> float:
        """A candidate's cost for ordering: its reading (none for a plain twin) and a head fit."""
        return (0 if c.twin else self.reading(c, photos)) + self.fit(2000)


def _config_for(base: TrainConfig, c: Candidate) -> TrainConfig:
    native = backbones.preprocessing_for(c.backbone).input_size
    return replace(base, backbone=c.backbone, input_size=None if c.input_size == native else c.input_size,
                   features=c.features, freeze="head", head="linear", head_fit="converge", aug="none",
                   weights=None, lr=None, time_limit=None, budget=None)


class OutOfTime(Exception):
    """A candidate ran past the time it may take."""


class Explorer:
    """Tries the candidates of one budgeted run (see the module's docstring)."""

    def __init__(self, base: TrainConfig, run: RunDir, store, run_id: str, reporter, watch, started: float,
                 progress: bool):
        self.base, self.run, self.store, self.run_id = base, run, store, run_id
        self.reporter, self.watch, self.progress = reporter, watch, progress
        self.end = started + float(base.budget)
        self.started, self.pace = started, Pace()
        self.models: dict[tuple[str, str], backbones.GraftModel] = {}
        self.read: dict[str, tuple] = {}  # a pooled reading's tensors, for its plain twin
        self.measured: dict[str, float] = {}  # seconds a photo of each reading measured
        self.correct: dict[str, np.ndarray] = {}  # each candidate's right and wrong on validation
        self.entries: list[dict] = []
        self.plan: dict = {}  # what the rest of the time goes to (fine-tuning or not), once a model is kept

    # ------------------------------------------------------------ the data
    def prepare(self) -> None:
        self.split = load_split(self.base, self.run, False, self.progress)
        manifest = self.split.manifest
        self.n_all = len(manifest)
        self.shas = manifest.loc[manifest["split"].isin(["train", "val"]), "sha1"].tolist()
        self.n_val = int((manifest["split"] == "val").sum())
        self.n_test = int((manifest["split"] == "test").sum())
        counts = self.split.counts()["train"].tolist()
        self.weights = class_weights(counts, self.base.class_weights)

    # ------------------------------------------------------------ time
    def left(self) -> float:
        return self.end - time.monotonic()

    def after(self, c: Candidate) -> float:
        """Seconds the rest of the run needs were `c` kept, estimated without timing anything: its run
        started (RUN_OVERHEAD), its head fitted again, the test photos read to score it, and its view read
        when it is not in the cache (a plain twin). Fine-tuning gets only what is left after that."""
        need = RUN_OVERHEAD + 2 * self.pace.fit(2000) + SCORING_MARGIN * self.n_test * self.per_photo(c)
        if c.twin:
            need += len(self.shas) * self.per_photo(c)
        return need

    def per_photo(self, c: Candidate) -> float:
        return self.pace.per_photo(c)

    def fine_tuning_needs(self, c: Candidate) -> float:
        """Seconds fine-tuning `c`'s network needs to be worth starting: its training step timed at two sizes
        (TIMING_PHOTOS photos' worth of passes, and building it twice) and one epoch on the smaller photos (a
        training step about 3 readings, at SMALL² the pixels)."""
        n_train = len(self.shas) - self.n_val
        epoch = (3 * n_train + self.n_val) * self.per_photo(c) * SMALL ** 2
        return TIMING_BUILD + TIMING_PHOTOS * self.per_photo(c) + epoch

    def missing(self, c: Candidate) -> int:
        model = self.model(c)
        key = cache_key(model.backbone, backbones.preprocessing_for(c.backbone, c.input_size))
        return len(self.shas) - cached_count(key, self.shas)

    def model(self, c: Candidate) -> backbones.GraftModel:
        key = (c.backbone, c.features)
        if key not in self.models:
            self.models[key] = backbones.create(c.backbone, len(self.split.classes), "head", "linear",
                                                dropout=self.base.dropout, features=c.features)
        return self.models[key]

    def estimate(self, c: Candidate) -> float:
        if c.twin:
            return self.pace.fit(backbones.get_spec(c.backbone).feature_dim) * MARGIN
        model, prep = self.model(c), backbones.preprocessing_for(c.backbone, c.input_size)
        export = self.pace.export_s if onnx_reads() and not _onnx_file(cache_key(model.backbone, prep)).is_file() else 0
        dim = _dim(model)
        return (self.pace.reading(c, self.missing(c)) + export + self.pace.fit(dim)) * MARGIN

    # ------------------------------------------------------------ trying one
    def check_stop(self) -> None:
        if self.watch.signalled or self.store.stop_requested(self.run_id):
            raise StopTraining

    def announce(self, c: Candidate, number: int, total: int) -> None:
        self.reporter.extra = {"stage": number, "stages": total, "stage_words": f"trying {c.name}",
                               "deadline_wall": time.time() + self.left()}
        self.store.set_progress(self.run_id, phase="prepare", **self.reporter.extra)

    def report(self, limit: float):
        """The feature pass's progress callback: shown on the Train page; stops the pass on a stop
        request, or past `limit` (monotonic)."""
        def hear(phase: str, done: int, total: int) -> None:
            self.reporter.phase(phase, done, total)
            if self.watch.signalled or self.store.stop_requested(self.run_id):
                raise StopTraining
            if time.monotonic() > limit:
                raise OutOfTime
        return hear

    def features(self, c: Candidate, limit: float) -> tuple:
        """(train x, train y, val x, val y, seconds a computed photo or None, photos computed) of a
        candidate's view."""
        model, prep = self.model(c), backbones.preprocessing_for(c.backbone, c.input_size)
        key = cache_key(model.backbone, prep)
        if onnx_reads() and not _onnx_file(key).is_file():
            began = time.monotonic()
            onnx_backbone(model.backbone, prep.input_size, key)  # exported once, timed apart from the reading
            self.pace.export_s = max(self.pace.export_s, time.monotonic() - began)
        batches = feature_batches(model, self.split, data_root(self.base.data), _config_for(self.base, c), prep,
                                  False, self.report(limit))
        train_x, train_y = batches.train.dataset.tensors
        val_x, val_y = batches.val.dataset.tensors
        info = batches.info
        computed = info.get("computed", 0)
        per_photo = info["cache_seconds"] / computed if computed >= 16 else None
        return train_x.numpy(), train_y.numpy(), val_x.numpy(), val_y.numpy(), per_photo, computed

    def seconds_a_photo(self, c: Candidate) -> float:
        """Seconds a photo on this machine: the candidate's own feature pass as measured (decoding included),
        or, where its features came from the cache, its network timed on a batch (`photo_seconds`)."""
        if c.reads in self.measured:
            return self.measured[c.reads]
        return photo_seconds(c.backbone, "head", c.input_size, c.features)

    def fitted(self, train_x, train_y, val_x, val_y):
        weights = self.weights.numpy()[train_y] if self.weights is not None else None
        began = time.monotonic()
        head = fit_head(train_x, train_y, val_x, val_y, len(self.split.classes), weights)
        self.pace.fit_per_dim = (time.monotonic() - began) / max(train_x.shape[1], 1)
        return head

    def attempt(self, c: Candidate, limit: float) -> dict:
        began = time.monotonic()
        if c.twin:
            train_x, train_y, val_x, val_y = self.read[c.twin]
            summary = backbones.get_spec(c.backbone).feature_dim
            train_x, val_x = train_x[:, -summary:], val_x[:, -summary:]
        else:
            train_x, train_y, val_x, val_y, per_photo, computed = self.features(c, limit)
            if per_photo:
                self.pace.heard(c, per_photo)  # starting up included: a reading of as many photos costs it too
            if per_photo and computed >= MEASURED_PHOTOS:
                self.measured[c.name] = per_photo
            if c.features == "pooled":
                self.read[c.name] = (train_x, train_y, val_x, val_y)
        head = self.fitted(train_x, train_y, val_x, val_y)
        predicted = head.logits(val_x).argmax(1)
        self.correct[c.name] = predicted == val_y
        right = int(self.correct[c.name].sum())
        backbone_mb = sum(p.numel() * p.element_size() for p in self.model(c).backbone.parameters()) / 1e6
        head_mb = sum(w.size + b.size for w, b in head.layers) * 4 / 1e6
        return {"name": c.name, "backbone": c.backbone, "input_size": c.input_size, "features": c.features,
                "head": head.kind, "penalty": head.penalty, "status": "tried",
                "val_acc": head.val_acc, "val_balanced": head.val_balanced, "val_score": head.val_score,
                "val_correct": right, "val_n": len(val_y), "val_ci": list(wilson(right, len(val_y))),
                "ms_per_photo": round(1000 * self.seconds_a_photo(c), 2),
                "ms_measured": c.reads in self.measured,
                "size_mb": round(backbone_mb + head_mb, 2), "seconds": round(time.monotonic() - began, 1),
                "reads_own_view": not c.twin}

    # ------------------------------------------------------------ the whole search
    def search(self) -> Candidate:
        pool = candidates(self.base)
        first, total = pool[0], len(pool)
        self.first = first
        tried: list[Candidate] = []
        waiting = pool[1:]
        done = 0
        waiting = [first] + waiting
        while waiting:
            self.check_stop()
            waiting[1:] = sorted(waiting[1:], key=lambda c: -self.gain_a_second(c, first))
            c = waiting.pop(0)
            done += 1
            self.try_one(c, done, total, tried, must=c is first)
            if c.name in self.read:  # its plain view, read with it
                waiting.insert(0, twin_of(c))
                total += 1
        return self.kept(tried)

    def gain_a_second(self, c: Candidate, first: Candidate) -> float:
        return (c.prior + 3.0) / max(self.pace.rough(c, len(self.shas)), 1e-3)  # +3: a prior below 0 still orders by cost

    def try_one(self, c: Candidate, number: int, total: int, tried: list[Candidate], must: bool = False) -> None:
        room = self.left() - max(self.after(c), self.after(self.kept(tried)) if tried else 0.0)
        estimate = 0.0
        if not must:
            rough = (0.0 if c.twin else len(self.shas) * self.per_photo(c)) + self.pace.fit(2000)
            if rough * MARGIN > room:  # clearly out of reach: nothing built or timed for it
                self.skip(c, f"~{rough * MARGIN:.0f} s roughly, {max(room, 0):.0f} s left for it")
                return
            estimate = self.estimate(c)
            room = self.left() - max(self.after(c), self.after(self.kept(tried)))
            if estimate > room:
                self.skip(c, f"~{estimate:.0f} s estimated, {max(room, 0):.0f} s left for it")
                return
        self.announce(c, number, total)
        log.info(f"budget: trying {c.name}" + ("" if must else f" (~{estimate:.0f} s estimated, {room:.0f} s left)"))
        limit = time.monotonic() + (max(room, 0.0) if not must else float("inf"))
        began = time.monotonic()
        try:
            entry = self.attempt(c, limit)
        except OutOfTime:
            self.skip(c, f"cut after {time.monotonic() - began:.0f} s: it ran past the {max(room, 0):.0f} s left for it")
            return
        entry["estimated_s"] = round(estimate, 1) if not must else None
        self.entries.append(entry)
        tried.append(c)
        log.info(f"budget: {c.name}: validation accuracy {entry['val_acc']:.4f} (balanced {entry['val_balanced']:.4f}), "
                 f"{entry['ms_per_photo']:.1f} ms a photo, {entry['seconds']:.0f} s")
        self.write()

    def skip(self, c: Candidate, reason: str) -> None:
        log.info(f"budget: {c.name} skipped: {reason}")
        self.entries.append({"name": c.name, "backbone": c.backbone, "input_size": c.input_size,
                             "features": c.features, "status": "skipped", "reason": reason})

    def kept(self, tried: list[Candidate]) -> Candidate:
        by_name = {c.name: c for c in tried}
        scored = [e for e in self.entries if e["status"] == "tried" and e["name"] in by_name]
        choice = choose(scored, self.n_val, self.correct)
        return by_name[choice["kept"]]

    # ------------------------------------------------------------ the record
    def board(self) -> dict:
        tried = [e for e in self.entries if e["status"] == "tried"]
        board = {"budget_s": float(self.base.budget), "n_val": self.n_val, "candidates": self.entries,
                 "explored_s": round(time.monotonic() - self.started, 1), "then": self.plan}
        if tried:
            board.update(choose(tried, self.n_val, self.correct))
            front = pareto(tried)
            for entry in tried:
                entry["pareto"] = entry["name"] in front
                entry["p_vs_best"] = mcnemar(self.correct[board["best"]], self.correct[entry["name"]])["p_value"]
            other = board["runner_up"] if board["kept"] == board["best"] else board["kept"]
            if other:
                board["p_value"] = next(e["p_vs_best"] for e in tried if e["name"] == other)
        return board

    def write(self) -> None:
        self.run.write_leaderboard(self.board())


MEASURED_PHOTOS = 200  # a feature pass over fewer photos is mostly starting up: its network is timed instead
SAME_SPEED = 1.1  # times a photo within 10 % of each other are the same speed (timings vary that much)
NOISE_P = 0.05  # a lead is beyond noise when McNemar's test on the validation photos puts it below this


def within_noise(best: dict, other: dict, n_val: int, correct: dict | None) -> bool:
    """Whether the best candidate's lead over `other` on validation could be noise: less than the margin a
    run's head choice needs (`probe.clearly_better`), or, on the same validation photos, a split of right
    and wrong answers that McNemar's exact test does not tell from chance (p >= NOISE_P)."""
    if not clearly_better(best["val_score"], other["val_score"], n_val):
        return True
    if correct is None or best["name"] not in correct or other["name"] not in correct:
        return False
    return mcnemar(correct[best["name"]], correct[other["name"]])["p_value"] >= NOISE_P


def choose(tried: list[dict], n_val: int, correct: dict | None = None) -> dict:
    """The choice on validation: `best`, the highest validation score (the mean of accuracy and balanced
    accuracy, as a run's head is chosen); `kept`, the cheapest a photo among those whose gap to the best
    is `within_noise` (within SAME_SPEED of the cheapest: the one whose view is read anyway, then the
    best on validation, then the smallest), (`correct`: each
    candidate's right and wrong answers on the validation photos); `runner_up`, when the best is kept,
    the best of the faster candidates (the sentence compares them)."""
    best = max(tried, key=lambda e: (e["val_score"], -e["ms_per_photo"]))
    close = [e for e in tried if within_noise(best, e, n_val, correct)]
    fastest = min(e["ms_per_photo"] for e in close)
    cheap = [e for e in close if e["ms_per_photo"] <= SAME_SPEED * fastest]  # a few % apart: the same speed
    kept = max(cheap, key=lambda e: (e.get("reads_own_view", True), e["val_score"], -e["size_mb"]))
    cheaper = [e for e in tried if e["ms_per_photo"] * SAME_SPEED < kept["ms_per_photo"]]
    runner_up = max(cheaper, key=lambda e: e["val_score"])["name"] if kept is best and cheaper else None
    return {"best": best["name"], "kept": kept["name"], "runner_up": runner_up}


def pareto(tried: list[dict]) -> set[str]:
    """The candidates no other beats on both validation accuracy and time a photo."""
    return {e["name"] for e in tried
            if not any(o["val_acc"] >= e["val_acc"] and o["ms_per_photo"] <= e["ms_per_photo"]
                       and (o["val_acc"] > e["val_acc"] or o["ms_per_photo"] < e["ms_per_photo"]) for o in tried)}


def explore(base: TrainConfig, run: RunDir, store, run_id: str, reporter, watch, started: float,
            progress: bool):
    """Try the candidates within `base.budget` (counted from `started`), write leaderboard.json, and
    return (the kept candidate's time-limited config, ending at the budget's end; the run's split)."""
    if distributed.active():
        raise BadInput("--budget runs on one process: start it without torchrun")
    run.write_config(asdict(base))  # a run folder from the start (the kept model's config replaces it)
    explorer = Explorer(base, run, store, run_id, reporter, watch, started, progress)
    explorer.prepare()
    kept = explorer.search()
    left, need = explorer.left() - explorer.after(kept), explorer.fine_tuning_needs(kept)
    tune = left >= need
    explorer.plan = {"kept_after_s": round(time.monotonic() - started, 1), "left_s": round(left, 1),
                     "fine_tuning": tune, "fine_tuning_needs_s": round(need, 1)}
    explorer.write()
    reporter.extra = {}  # the progress of the kept model's run is its own (a time-limited run names its stages)
    log.info(f"budget: {kept.name} kept after {time.monotonic() - started:.0f} s of {base.budget:.0f} s; "
             + (f"its network is fine-tuned in the {left:.0f} s left, scoring kept apart" if tune else
                f"fine-tuning needs ~{need:.0f} s, {max(left, 0):.0f} s are left: its last layer is fitted again "
                "and scored"))
    config = replace(_config_for(base, kept), aug=base.aug, lr=base.lr,
                     time_limit=float(base.budget) if tune else None, budget=float(base.budget))
    store.update(run_id, backbone=config.backbone, freeze=config.freeze, config=asdict(config))  # the Runs table's
    if base.name is None:
        store.rename(run_id, f"Best in {base.budget / 60:g} min · {kept.name}")
    return config, explorer.split


def conclude(run: RunDir, store, run_id: str, started: float) -> None:
    """After the run: what its time-limited part kept (the candidate's head, or a fine-tuned network),
    its validation and test figures, its cost, and the time used against the budget."""
    board = run.leaderboard()
    if not board:
        return
    row = store.get(run_id)
    card = run.card()
    seconds = 1.0 / row["photos_per_s"] if row.get("photos_per_s") else \
        photo_seconds(card.backbone, card.freeze, card.preprocessing.input_size, card.features)
    kept_stage = next((s for s in run.stages() or [] if s.get("kept")), None)
    board["final"] = {
        "val_acc": row["best_val_acc"], "test_acc": row["test_acc"],
        "stage": kept_stage and kept_stage.get("words"), "fine_tuned": card.freeze != "head",
        "input_size": card.preprocessing.input_size, "freeze": card.freeze,
        "ms_per_photo": round(1000 * seconds, 2),
        "size_mb": round(run.best_file.stat().st_size / 1e6, 2) if run.best_file.is_file() else None,
        "stages": run.stages() or []}
    board["used_s"] = round(time.monotonic() - started, 1)
    run.write_leaderboard(board)
    store.update(run_id, freeze=card.freeze)  # fine-tuned in the end, or not


def kept_photo_seconds(run: RunDir) -> float | None:
    """Seconds a photo of a budgeted run's final model as its leaderboard measured it: when the model is the
    kept candidate's frozen network at its size and view (a fine-tuned one was not measured); else None."""
    board, card = run.leaderboard(), run.card()
    entry = next((e for e in (board or {}).get("candidates", []) if e["name"] == (board or {}).get("kept")), None)
    if entry is None or card.freeze != "head" or entry["input_size"] != card.preprocessing.input_size \
            or entry["features"] != card.features:
        return None
    return entry["ms_per_photo"] / 1000


def _onnx_file(key: str) -> Path:
    """Where `features.onnx_backbone` keeps a frozen backbone's ONNX file (an export costs seconds)."""
    return cache_home() / "onnx" / f"{key}.onnx"


def _dim(model: backbones.GraftModel) -> int:
    return int(model.head[-1].in_features)
