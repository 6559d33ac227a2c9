"""The sentences a stakeholder reads about how a run trained: which model it keeps, its stages and the
last layer fitted after the loop. Built from the run's records (stages.json, head_fit.json)."""
from __future__ import annotations

from core.models.probe import head_words


def describe_head_fit(record: dict) -> str:
    """head_fit.json in one sentence: which last layer was kept, and the fitted one's figures."""

    fitted = head_words(record.get("kind", "linear"), record.get("penalty", record.get("C")))  # C: older runs
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
