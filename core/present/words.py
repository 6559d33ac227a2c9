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
    return (f"{n:,} images are stored in another colour format (for example greyscale) and are "
            "turned into colour photos when loaded. Nothing to do: this is information, not a problem.")


def undecoded_sentence(n: int) -> str:
    return (f"{n:,} photos were read for their size and content only, so the page opened quickly: they have not "
            "yet been decoded, so damaged files and near-duplicates among them are not known. Training skips a "
            "photo that does not decode and names it.")


def decoding_progress(done: int, total: int, elapsed: float) -> str:
    """The decoding pass's progress bar text, with an honest time left (from the pace so far)."""
    if not total:
        return "Decoding: starting…"
    left = elapsed / done * (total - done) if done else None
    return f"Decoded {done:,} of {total:,} photos · {_duration(left)}"


def decoding_failed(error: str) -> str:
    return (f"The decoding stopped before the end ({error}). What it decoded is kept: the button goes on from "
            "there.")


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


# ------------------------------------------------------------------ Results' first screen and the Present page
def confusion_help() -> str:
    return ("Each row is a true class, each column what the model answered: the diagonal is right, every other "
            "cell a kind of mistake. Row-normalised shows each row as shares of that class's photos.")


def per_class_help() -> str:
    return ("Per class, the share of its test photos the model got right; the figure at the end of each bar is how "
            "many photos of that class it learned from.")


PRESENT_STEPS = ("The data", "How good is it?", "Where it fails", "What to decide", "Try a photo")


def present_data(images: int, classes: int, train: int) -> str:
    """Step 1 of the story: what the model learned from."""
    return f"{images} photos in {classes} classes; the model learned from {train} of them, the rest tested it."


def present_data_help() -> str:
    return "Photos per class in this run (training, validation and test together): one colour per class."


def present_photos_help() -> str:
    return "A few photos of each class, as the model saw them."


def present_good(accuracy: float, baseline: float) -> str:
    """Step 2's big figure and its comparison."""
    return f"{percent(accuracy)} right, where always giving the most common answer scores {percent(baseline)}."


def present_good_help() -> str:
    return "Measured on photos the model never saw while learning; the interval is where the true figure lies."


def present_fails(true: str, predicted: str, count: int) -> str:
    """One of step 3's confusions."""
    return f"{count} × {true} taken for {predicted}"


def present_fails_none() -> str:
    return "No mistakes on the test photos: nothing to show here."


def present_fails_help() -> str:
    return "The pairs of classes the model mixes up most often on the test photos, with photos it got wrong."


def present_decide(caught: str, good_sent: str) -> str:
    """Step 4: what the saved pass/inspect rule does on the test photos."""
    return f"On the test photos this rule catches {caught} defects and sends {good_sent} good parts to inspection."


def present_decide_none() -> str:
    return "No pass/inspect rule is saved for this run yet: the presenter sets one on Results → Pass or inspect."


def present_decide_help() -> str:
    return "Counted on the run's test photos with the saved threshold; another threshold trades one against the other."


def present_try_help() -> str:
    return "Drop a photo: the model answers at once, with how sure it is."


def present_step_of(step: int, steps: int, title: str) -> str:
    return f"Step {step + 1} of {steps}: {title}"


def present_follow_help() -> str:
    return "Your page moves when the presenter moves to another step."


def present_following(step: int, steps: int) -> str:
    return f"Following the presenter (step {step + 1} of {steps})."


# ---------------------------------------------------------------------- inbox, what changed, dataset map
def inbox_sentence(open_photos: int, decided: int) -> str:
    """The inbox in one line: how many photos wait for a person and how many were decided."""
    if not open_photos and not decided:
        return "Nothing to look at: no likely mislabels, no test mistakes and no kept uploads."
    waiting = f"{open_photos} photo{'s' if open_photos != 1 else ''} to look at"
    return waiting + (f"; {decided} already decided (kept in the dataset's .graft folder)." if decided else ".")


def inbox_card(label: str, suggested: str, source: str) -> str:
    """A card's caption: where the photo came from, its label and what the model suggests."""
    filed = f"filed as **{label}**" if label else "not in a class yet"
    return f"{source}: {filed}, looks like **{suggested}**" if suggested else f"{source}: {filed}"


def inbox_help() -> str:
    return ("Likely mislabels come from the label check, test mistakes from the current run, kept uploads from "
            "Predict. A decision is a note beside the dataset: no photo is moved or deleted, and the next training "
            "uses it.")


def retrain_help() -> str:
    return ("Trains again with the current run's settings on the data as decided (relabelled photos under their new "
            "class, excluded ones left out, added uploads in); an untouched photo keeps its split.")


def what_changed_sentence(name_a: str, name_b: str, comparison) -> str:
    """What changed from run A to run B on the test photos they share, with McNemar's verdict."""
    if not comparison.common:
        return f"{name_a} and {name_b} share no test photos, so they cannot be compared photo by photo."
    fixed, broken = len(comparison.fixed), len(comparison.broken)
    moved = (f"From {name_a} to {name_b}, {fixed} test photo{'s' if fixed != 1 else ''} went from wrong to right "
             f"and {broken} from right to wrong (accuracy {percent(comparison.accuracy_a)} → "
             f"{percent(comparison.accuracy_b)} on the {comparison.common} photos both scored). ")
    return moved + difference_sentence(name_a, name_b, comparison.test)


def map_caption(method: str, shown: int, total: int) -> str:
    """Under the dataset map: what the picture is, and the sample when not every photo is drawn."""
    sample = "" if shown >= total else (f" {shown} of the {total} photos are drawn (a sample of each class that keeps "
                                         "every marked photo).")
    return (f"Each dot is a photo, placed by {method} so that photos the pretrained network sees as alike sit close "
            "together; the colour is its class. Squares mark test mistakes, crosses likely mislabels, diamonds kept "
            "uploads. Drag a box to see those photos." + sample)


# ------------------------------------------------------------------ the model chosen within a budget
def budget_choice_sentence(board: dict) -> str | None:
    """A budgeted run's choice (leaderboard.json) in one honest sentence: the kept model, the best on
    validation, how far apart they are, whether that is within noise, and what it costs a photo."""
    tried = {e["name"]: e for e in board.get("candidates", []) if e.get("status") == "tried"}
    kept, best = tried.get(board.get("kept")), tried.get(board.get("best"))
    if kept is None or best is None:
        return None
    if len(tried) == 1:
        return (f"{kept['name']} is kept: the only model the budget had time to try (validation accuracy "
                f"{percent(kept['val_acc'])}).")
    p = board.get("p_value")
    odds = (" (McNemar's test: p < 0.01)" if p < 0.01 else f" (McNemar's test: p = {p:.2f})") if p is not None else ""
    if kept is not best:
        gap = 100 * (best["val_score"] - kept["val_score"])
        slower = best["ms_per_photo"] / max(kept["ms_per_photo"], 1e-9)
        if slower < 1.05:
            return (f"{best['name']} is {gap:.1f} points better than {kept['name']} on validation but within noise{odds}, "
                    f"at the same time per photo: {kept['name']} is kept, its view being the one already read.")
        return (f"{best['name']} is {gap:.1f} points better than {kept['name']} on validation but within noise{odds} and "
                f"{slower:.1f}× slower per photo: {kept['name']} is kept.")
    other = tried.get(board.get("runner_up") or "")
    if other is None:
        return (f"{kept['name']} is kept: the best on validation ({percent(kept['val_acc'])}) and no slower per photo "
                "than any other model tried.")
    gap = 100 * (kept["val_score"] - other["val_score"])
    slower = kept["ms_per_photo"] / max(other["ms_per_photo"], 1e-9)
    return (f"{kept['name']} is kept: {gap:.1f} points better on validation than the faster {other['name']}, beyond "
            f"noise{odds}, for {slower:.1f}× the time per photo.")


def budget_help() -> str:
    """What the leaderboard's figures mean (one sentence beside it)."""
    return ("Each model was fitted on the training photos and scored on the validation photos only (the test photos "
            "score the kept one); validation points are accuracy and balanced accuracy averaged, the interval is "
            "95 %, and milliseconds a photo are this machine's network time.")


def budget_used_sentence(board: dict) -> str | None:
    """The time used against the budget and what the rest of it gave (after the run)."""
    final, used = board.get("final"), board.get("used_s")
    if not final or used is None:
        return None
    if used > board["budget_s"] * 1.1:
        first = next((e for e in board.get("candidates", []) if e.get("status") == "tried"), None)
        over = f"{used / 60:.1f} minutes used against a budget of {board['budget_s'] / 60:g} min"
        if first and first["seconds"] > board["budget_s"] / 2:
            return (f"{over}: the first model, which always runs so that there is a model, took {first['seconds']:.0f} s "
                    "of it alone.")
        return f"{over}: more than the run's estimates allowed for."
    what = f"comes from {final['stage']}" if final.get("stage") else "is the kept model's last layer"
    test = f", test accuracy {percent(final['test_acc'])}" if final.get("test_acc") is not None else ""
    return (f"{used / 60:.1f} of {board['budget_s'] / 60:g} minute{'s' if board['budget_s'] != 60 else ''} used, "
            f"scoring included; the model kept at the end {what}, with validation accuracy {percent(final['val_acc'])}{test}.")


def speed_chart_help() -> str:
    """Under the Runs page's accuracy-against-speed chart."""
    return ("Each dot is a finished run: higher is more accurate on its test photos, further right scores more photos "
            "a second on this machine; bigger dots are bigger models.")


# ------------------------------------------------------------------ INT8: what it changes, before it is chosen
def int8_sentence(figures: dict) -> str:
    """What the INT8 model changes against the full-precision one (`core.deploy.export.int8_figures`),
    in one plain sentence: size, speed, accuracy and how often they agree, on the test photos."""
    change = 100 * figures["accuracy_change"]
    moved = ("the same accuracy" if abs(change) < 0.05 else
             f"{abs(change):.1f} points {'higher' if change > 0 else 'lower'} accuracy")
    return (f"INT8 makes the model {1 / max(figures['size_ratio'], 1e-9):.1f}× smaller and "
            f"{figures['speedup']:.1f}× {'faster' if figures['speedup'] >= 1 else 'slower'} on this machine's CPU, "
            f"with {moved} on {figures['photos']} test photos ({percent(figures['accuracy']['int8'])} against "
            f"{percent(figures['accuracy']['fp32'])}); it gives the same label as the full model for "
            f"{percent(figures['agreement'])} of them.")


def int8_rows(figures: dict) -> list[dict]:
    """The INT8 figures as table rows (full precision beside INT8), for engineers."""
    mb = 1024 * 1024
    return [{"model": name, "size (MB)": round(figures["bytes"][key] / mb, 1),
             "photos a second": round(figures["photos_per_s"][key], 1),
             "test accuracy": figures["accuracy"][key]} for key, name in (("fp32", "full precision (fp32)"),
                                                                          ("int8", "INT8"))]


def int8_help() -> str:
    return ("Measured just now on the run's test photos, both models on the same batch of photos one after the "
            "other, so a busy machine slows both alike; the INT8 ranges come from the run's training photos.")


def present_topk_help() -> str:
    return "How sure the model is of each answer for this photo."


def present_not_evaluated() -> str:
    return "This run has not been scored on its test photos yet: open it once on the Results page."


def keep_for_inbox_help() -> str:
    return ("Copies this photo beside the dataset (its .graft/inbox folder) with what the model said, so the "
            "Inbox page can add it to a class or leave it out; no class folder changes until you decide.")


def kept_for_inbox(path: str) -> str:
    return f"Kept for the inbox as {path}: decide on the Inbox page whether it joins a class."
