"""The sentences a stakeholder reads, in one place: the figures (percents, chances, intervals), how
good a run is and whether two runs differ, what the model says about a photo, how a training is going
and which model it kept, what a dataset looks like. The pages and the CLI place these sentences; they
do not assemble them. A name a person typed arrives here already escaped where a page shows markdown.
(The learning curve's sentence is saved with the curve, so it lives below: `core.evaluate.words`.)"""
from __future__ import annotations

import time

from core.evaluate.stats import wilson
from core.models.probe import head_words


# ------------------------------------------------------------------ figures
def percent(value: float) -> str:
    """The one format for an accuracy everywhere: a whole percent."""
    return f"{value:.0%}"


def chance(p: float) -> str:
    """A model's probability as a person reads it: a whole percent, but '>99%' or '<1%' rather than a
    rounded 100 % or 0 %, which would claim a certainty the model does not have."""
    if 0.995 <= p < 1:
        return ">99%"
    if 0 < p < 0.005:
        return "<1%"
    return percent(p)


def interval_words(correct: int, n: int) -> str:
    """The 95 % interval of `correct` out of `n` as 'lo–hi' whole percents."""
    lo, hi = wilson(correct, n)
    return f"{lo:.0%}–{hi:.0%}"


def count_of(part: int, whole: int, share: float) -> str:
    """'12 of 40 (30%)'."""
    return f"{part} of {whole} ({percent(share)})"


# ------------------------------------------------------------------ how good a run is
def accuracy_sentence(metrics: dict, split: str = "test") -> str:
    """'Right on 77 of 100 test images (95 % interval 68–84 %). A model that always says defect_000
    would be right on 58.'"""
    n, correct = metrics["n"], metrics.get("correct", round(metrics["accuracy"] * metrics["n"]))
    images = f"{split} images" if split else "images"
    text = (f"Right on {correct} of {n} {images} ({percent(correct / n if n else 0)}; "
            f"95 % interval {interval_words(correct, n)}).")
    baseline = metrics.get("baseline")
    if baseline and baseline.get("class") is not None:
        text += (f" A model that always says {baseline['class']} would be right on "
                 f"{baseline['correct']} of {baseline['n']} ({percent(baseline['accuracy'])}).")
    return text


def measured_on(split_word: str, has_test: bool) -> str:
    """Which images the headline figures rest on."""
    return (f"Measured on the run's held-out {split_word} images, never used in training"
            + ("" if has_test else " (this dataset has no test split)") + ".")


def accuracy_help(n: int, split_word: str, lo: float, hi: float) -> str:
    return (f"Share of the {n} {split_word} images labelled correctly; with this many images the "
            f"true figure is between {percent(lo)} and {percent(hi)} (95 % interval).")


def baseline_help(name: str) -> str:
    return (f"The best a model that always gives the same answer could score on these images (always "
            f"{name}, their most common class): the figure to beat.")


def difference_sentence(name_a: str, name_b: str, test: dict) -> str:
    """Plain words for a McNemar result between two runs on the same images."""
    if test["p_value"] >= 0.05:
        return (f"{name_a} and {name_b} differ on {test['only_a'] + test['only_b']} images "
                f"({test['only_a']} vs {test['only_b']}): within noise (p = {test['p_value']:.2f}); "
                "do not choose between them on this figure.")
    better = name_a if test["only_a"] > test["only_b"] else name_b
    return (f"{better} is better beyond noise: right on {max(test['only_a'], test['only_b'])} images the "
            f"other gets wrong, against {min(test['only_a'], test['only_b'])} (p = {test['p_value']:.3f}).")


def run_figures(best_val_acc: float | None, test_acc: float | None) -> str:
    """A run's figures beside its name in a picker: 'validation 81% · test 78%'."""
    val = f"validation {best_val_acc:.0%}" if best_val_acc is not None else "no validation figure"
    return val + (f" · test {test_acc:.0%}" if test_acc is not None else "")


def tta_spinner(n: int) -> str:
    return (f"Scoring each of the {n} test photos 4 more times (about "
            f"{max(10, round(4 * n / 25 / 10) * 10)} s on this machine)…")


def mistakes_caption(n: int) -> str:
    return f"{n} misclassified images, highest loss first."


def learning_curve_caption(split_word: str) -> str:
    return ("A quick model on this run's view of the photos, trained on 10, 25, 50 and 100 % of the training photos "
            f"and scored on the same {split_word} photos: a line still rising means more photos of that class would "
            "pay; a flat line means more of the same will not.")


# ------------------------------------------------------------------ another folder
def unfamiliar_sentence(result: dict) -> str:
    """What the detector says about a scored folder, in one plain sentence ('' without a detector)."""
    if "unfamiliar" not in result:
        return ""
    share = result["unfamiliar_share"]
    text = (f"{result['unfamiliar']} of {result['n']} photos ({share:.0%}) do not look like the training photos "
            f"({flag_rate_words(result.get('flag_rate') or 0.05)})")
    if result.get("familiar_accuracy") is not None and result["unfamiliar"]:
        text += f"; on the familiar ones it is right on {result['familiar_accuracy']:.0%}"
    return text + "."


def flag_rate_words(rate: float) -> str:
    """How often the detector flags an ordinary photo of the dataset's kind: 'about 1 in 100 ordinary
    photos is flagged as unfamiliar'."""
    return f"about 1 in {max(round(1 / max(rate, 1e-6)), 1):,} ordinary photos is flagged as unfamiliar"


def skipped_classes_sentence(skipped: dict[str, int]) -> str:
    return "Skipped (this run does not know these classes): " + ", ".join(
        f"{k} ({v} images)" for k, v in skipped.items())


# ------------------------------------------------------------------ what the model says about a photo
def verdict(result: dict, names: dict[str, str], threshold: float) -> str:
    """Two separate warnings: unfamiliar (not like the training photos at all) and uncertain (like
    them, but between two classes, below `threshold`); else the class and its chance."""
    label = names.get(result["label"], result["label"])
    if result.get("unfamiliar"):
        return (f"unfamiliar — this does not look like the training photos, so no label can be trusted "
                f"(the closest class would be {label}, {chance(result['confidence'])})")
    if result["confidence"] < threshold:
        return f"uncertain — looks like the training photos, but between classes (best guess {label}, " \
               f"{chance(result['confidence'])})"
    return f"{label} ({chance(result['confidence'])})"


def threshold_help(threshold: float) -> str:
    return f"Default {threshold:.3f}: 90% of the correct validation predictions are above it."


def decision_rule(decision, names: dict[str, str]) -> str:
    """The run's pass/inspect rule (a `Decision`) in one sentence."""
    return (f"Pass or inspect: images go to inspection when the chance of "
            f"{' / '.join(names.get(c, c) for c in decision.inspect)} "
            f"is at least {decision.threshold:.0%} (set on the Results page).")


def decision_sentence(decision, probabilities: dict[str, float], names: dict[str, str] | None = None) -> str:
    """The rule's verdict on one photo in words, with the inspect classes as people read them (`names`)."""
    p, which = decision.p_inspect(probabilities), " / ".join((names or {}).get(c, c) for c in decision.inspect)
    if p >= decision.threshold:
        return f"send to inspection (chance of {which}: {chance(p)}, at or above {decision.threshold:.0%})"
    return f"pass (chance of {which}: {chance(p)}, below {decision.threshold:.0%})"


def exported_sentence(parity: dict, same: bool) -> str:
    """Whether the export gives this dashboard's answers (`same`: every check of its model.json 'parity'
    passed)."""
    if same:
        return (f"Exported: the exported model gives the same answers as this dashboard on all "
                f"{parity['images']} validation photos checked.")
    return ("The exported model does not give the same answers as this dashboard: do not ship it "
            "(the details below say where it differs).")


def parity_line(name: str, check: dict) -> str:
    """One parity check in figures, for engineers."""
    return (f"{name}: max probability difference {check['max_abs_diff']:.1e}"
            + (f", same top-1: {check['same_top1']}" if "same_top1" in check else ""))


def written_to(folder: str) -> str:
    return f"Written to {folder} (model, model.json, graft_predict.py)."


# ------------------------------------------------------------------ how a training is going
def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "estimating the time left…"
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s left"
    return f"about {seconds / 60:.0f} min left"


def describe_progress(progress: dict, config: dict, elapsed: float) -> tuple[float, str]:
    """(fraction done, one plain sentence with an honest ETA) for the run's current phase."""
    phase = progress.get("phase", "")
    if progress.get("stage") and phase in ("train", "prepare"):
        left = max(0.0, progress.get("deadline_wall", 0) - time.time())
        words = f"Stage {progress['stage']} of {progress['stages']}: {progress['stage_words']}"
        if phase == "train" and "steps" in progress:
            return min(progress["step"] / max(progress["steps"], 1), 1.0), \
                f"{words} · epoch {progress.get('epoch', 0)} · {_duration(left)} of the time limit"
        return 0.0, f"{words} · getting it ready… · {_duration(left)} of the time limit"
    if "steps" in progress and phase == "train":
        done, total = progress["step"], max(progress["steps"], 1)
        return min(done / total, 1.0), (f"Learning: epoch {progress.get('epoch', 0)} of {config.get('epochs')} · "
                                        f"{_duration(progress.get('eta'))}")
    if phase.startswith("features"):
        return _reading_progress(progress, phase)
    if phase == "converge":
        return 1.0, f"Fitting the last layer to convergence, a few settings tried on validation… {elapsed:.0f} s so far"
    if phase == "evaluate":
        return 1.0, f"Scoring the held-out test photos (about as long as reading them)… {elapsed:.0f} s so far"
    return 0.0, f"Getting ready: looking through the folder and loading the pretrained model… {elapsed:.0f} s"


def _reading_progress(progress: dict, phase: str) -> tuple[float, str]:
    """The photos being read once by the frozen network (a feature phase)."""
    done, total = progress["phase_done"], max(progress["phase_total"], 1)
    which = "validation" if " val" in phase else "training"
    if progress.get("stage"):  # a later stage of a time-limited run reading the photos again
        left = max(0.0, progress.get("deadline_wall", 0) - time.time())
        return min(done / total, 1.0), (f"Stage {progress['stage']} of {progress['stages']}: "
                                        f"{progress['stage_words']} · reading the {which} photos: {done} of "
                                        f"{total} · {_duration(left)} of the time limit")
    views = "" if phase.endswith("eval") else " (a varied copy, for augmentation)"
    return min(done / total, 1.0), (f"Reading the {which} photos once with the pretrained model{views}: "
                                    f"{done} of {total} · {_duration(progress.get('phase_eta'))} for this step; "
                                    "the epochs after it take seconds")


# ------------------------------------------------------------------ which model a run kept
def describe_head_fit(record: dict) -> str:
    """head_fit.json in one sentence: which last layer was kept, and the fitted one's figures."""

    fitted = head_words(record.get("kind", "linear"), record.get("penalty", record.get("C")))  # C: a record that names the penalty C
    if record["chosen"] == "converged":
        return (f"last layer **fitted to convergence**: {fitted}, validation accuracy {record['val_acc']:.1%} against "
                f"{record['loop_val_acc']:.1%} for the training loop's best epoch")
    return (f"last layer **the training loop's** (validation accuracy {record['loop_val_acc']:.1%}); fitted to "
            f"convergence, {fitted} reached {record['val_acc']:.1%}")


def describe(record: list[dict] | None, head_fit: dict | None) -> list[str]:
    """A run's stages in sentences (the Results page's engineer details): each stage's validation
    accuracy, the fitted head, and which stage's model is the one kept; without stages, the head fit."""

    fit = describe_head_fit(head_fit) if head_fit else None
    if not record:
        return [f"{fit[0].upper()}{fit[1:]}."] if fit else []
    lines = []
    for stage in record:
        figure = stage.get("best_val_acc", stage.get("val_acc"))
        ran = "skipped (it did not fit in the time)" if stage.get("skipped") else \
            f"validation accuracy {figure:.1%}" if figure is not None else "stopped before its validation"
        head = stage.get("head")
        detail = f"; {head_words(head['kind'], head['penalty'])}" if isinstance(head, dict) else \
            f"; {fit}" if stage["stage"] == 1 and fit else ""
        kept = " — **the model kept**" if stage.get("kept") else ""
        lines.append(f"Stage {stage['stage']}, {stage['words']}: {ran}{detail}{_speed(stage)}{kept}.")
    return lines


def kept_sentence(record: list[dict] | None, head_fit: dict | None) -> str | None:
    """Which model a finished run keeps, in one plain sentence for the room (the Train page under its
    curves, whose epochs do not show a last layer fitted afterwards or a later stage's model)."""
    kept = next((stage for stage in record or [] if stage.get("kept")), None)
    if kept is not None:
        figure = kept.get("best_val_acc", kept.get("val_acc"))
        return (f"The model kept comes from stage {kept['stage']}, {kept['words']}"
                + (f" (validation accuracy {figure:.0%})." if figure is not None else "."))
    if not head_fit:
        return None
    if head_fit.get("chosen") == "converged":
        return (f"After the last epoch, the last layer was fitted once more on the stored features, to convergence: "
                f"validation accuracy {head_fit['val_acc']:.0%}, against {head_fit['loop_val_acc']:.0%} at the best "
                "epoch on the curves. That model is the one kept.")
    return (f"The model kept is the best epoch's on the curves; a last layer fitted to convergence afterwards reached "
            f"{head_fit['val_acc']:.0%} on validation, not clearly better.")


def _speed(stage: dict) -> str:
    """How fast the stage went, in words: photos read a second by the frozen network (stages on its
    view), photos a second through training and validation (fine-tuning stages)."""
    if stage.get("read_per_s"):
        return f"; {stage['read_per_s']:.0f} photos read a second"
    if stage.get("trained_per_s"):
        return f"; {stage['trained_per_s']:.0f} photos a second through training and validation"
    return ""


# ------------------------------------------------------------------ a dataset
def split_sentence(layout: str) -> str:
    """How a dataset's photos are split, by its folder layout ('splits' or one folder per class)."""
    return ("the folder gives its own training, validation and test photos" if layout == "splits" else
            "one folder per class; the photos are split automatically: 70 % to learn from, 15 % to choose the best "
            "epoch (validation) and 15 % kept aside for the final test")


def no_images_sentence(folder: str, skipped: int | None = None) -> str:
    """A folder with no usable image (`skipped`: how many files were skipped, where that is shown)."""
    if skipped is None:
        return f"No usable images in {folder}: it needs one sub-folder per class with images in it."
    return (f"No usable images in {folder}. It needs one sub-folder per class with images in it "
            f"({skipped} files skipped).")


def not_a_folder(folder: str, hint: bool = True) -> str:
    return f"{folder} is not a folder." + (" Give a folder with one sub-folder per class." if hint else "")


def dropped_sentence(dropped: dict[str, int], minimum: int) -> str:
    """The classes under the minimum, in bold with their counts."""
    return "Dropped classes (fewer than %d images): %s" % (
        minimum, ", ".join(f"**{c}** ({n})" for c, n in dropped.items()))


def small_classes_sentence(classes: list[str]) -> str:
    return f"Classes with fewer than 10 images: {', '.join(classes)} — results on them will be noisy."


def imbalance_sentence(ratio: float) -> str:
    return (f"The largest class is {ratio:.0f}× the smallest: accuracy alone will flatter the model; "
            "class weights are applied automatically and balanced accuracy is reported.")


def leakage_sentence(groups: int) -> str:
    return (f"{groups} duplicate group(s) sit in more than one split: the same "
            "photo in train and test makes the test accuracy a lie. Remove the copies.")


def converted_sentence(n: int) -> str:
    return (f"{n} images are stored in another colour format (for example greyscale) and are "
            "turned into colour photos when loaded. Nothing to do: this is information, not a problem.")


def same_size_sentence(width: int, height: int) -> str:
    return f"Every image is **{width} × {height} pixels**."


def first_rows(shown: int, total: int) -> str:
    return f"First {shown} of {total} rows."


def reading_photos(done: int, total: int) -> str:
    return f"Reading the photos with the pretrained network: {done} of {total}"


def flagged_sentence(flagged: int, photos: int) -> str:
    """The label check's count of photos that look labelled wrong."""
    return (f"**{flagged} of {photos} photos** look labelled wrong." if flagged else
            f"None of the {photos} photos looks labelled wrong.")


def flagged_photo(given: str, suggested: str) -> str:
    return f"filed as **{given}** → looks like **{suggested}**"


def flagged_photo_help(file: str, p_given: float, suggested: str, p_suggested: float) -> str:
    return f"{file}: the quick model gives its folder's class {p_given:.0%} and {suggested} {p_suggested:.0%}."


def augmentation_caption(level: str) -> str:
    """What the augmentation preview shows, with the preset the next training uses."""
    return (f"One training photo as the model will see it, 16 times. The next training (as set on the Train page) "
            f"uses the '{level}' preset" + (": every view is the same photo, because a frozen network reads each "
            "photo once." if level == "none" else "."))


def serve_commands(run_path: str, port: int = 8080) -> str:
    """The two shell lines that serve a run over HTTP and send it a photo (the run's folder quoted for the
    shell, whatever its name holds)."""
    import shlex

    return (f"graft serve {shlex.quote(str(run_path))} --port {int(port)}\n"
            f"curl -F file=@photo.jpg http://127.0.0.1:{int(port)}/predict")
