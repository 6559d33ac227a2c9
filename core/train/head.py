"""The last layer fitted to convergence on a frozen backbone's cached features, after the loop, and
kept when it is clearly better on validation than the loop's best epoch."""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from core.base.errors import log
from core.models import backbones
from core.models.probe import clearly_better, fit_head, val_score
from core.runs.folder import RunDir, card_for
from core.runs.store import RunStore
from core.train.config import TrainConfig
from core.train.loop import Plan


def converges(plan: Plan) -> bool:
    """Whether the run's head is also fitted to convergence: a linear head on cached features."""
    return (plan.config.head_fit == "converge" and plan.config.head == "linear" and bool(plan.batches.info)
            and plan.state.best_val_acc is not None)


def fit_converged(plan: Plan):
    """The head fitted to convergence on the plan's cached features, with its class weights
    (`probe.FittedHead`: a logistic regression or a two-layer network, chosen on validation)."""
    train_x, train_y = plan.batches.train.dataset.tensors
    val_x, val_y = plan.batches.val.dataset.tensors
    weights = plan.criterion.weight
    sample_weight = weights.cpu().numpy()[train_y.numpy()] if weights is not None else None
    return fit_head(train_x.numpy(), train_y.numpy(), val_x.numpy(), val_y.numpy(), len(plan.split.classes),
                    sample_weight)


MLP_LAYERS = ("head.0", "head.3")  # backbones.make_head("mlp"): Linear, ReLU, Dropout, Linear


def with_head(state: dict, fitted) -> dict:
    """A model state with its head replaced by a fitted one's: the last linear layer for a `linear`
    fit, the `mlp` head's two layers (in place of the whole head) for a network."""
    if fitted.kind == "mlp":
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        names = MLP_LAYERS
    else:
        names = (_linear_key(state),)
    for name, (weight, bias) in zip(names, fitted.layers):
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.from_numpy(weight), torch.from_numpy(bias)
    return state


def keep_fitted(run: RunDir, state: dict, fitted, config: TrainConfig, classes: list[str]) -> None:
    """Save a model state with a fitted head as best.pt, and the card that names the head's kind."""
    run.keep_model(with_head(state, fitted), card_for({**asdict(config), "head": fitted.kind}, classes,
                                                      backbones.preprocessing_for(config.backbone, config.input_size)))


def converge_head(plan: Plan, run: RunDir, store: RunStore, run_id: str) -> dict:
    """Fit the head to convergence on the cached features (`fit_converged`) and keep it as best.pt
    (with a card naming its kind) when its validation score (the mean of accuracy and balanced
    accuracy) is `clearly_better` than the loop's best epoch's; the choice is saved as
    head_fit.json and logged. Seconds: a few fits on features already in memory."""
    store.set_progress(run_id, phase="converge")
    started = time.perf_counter()
    fitted = fit_converged(plan)
    val_x, val_y = plan.batches.val.dataset.tensors
    state = run.load_best()
    linear = _linear_key(state)
    with torch.inference_mode():
        loop_logits = val_x @ state[f"{linear}.weight"].T + state[f"{linear}.bias"]
    loop_score, loop_acc, loop_balanced = val_score(val_y.numpy(), loop_logits.argmax(1).numpy())
    chosen = "converged" if clearly_better(fitted.val_score, loop_score, len(val_y)) else "loop"
    if chosen == "converged":
        keep_fitted(run, state, fitted, plan.config, plan.split.classes)
        store.update(run_id, best_val_acc=fitted.val_acc)
    record = {"chosen": chosen, **fitted.record(), "val_acc": fitted.val_acc, "val_balanced": fitted.val_balanced,
              "val_score": fitted.val_score, "loop_val_acc": loop_acc, "loop_val_balanced": loop_balanced,
              "loop_val_score": loop_score, "loop_best_epoch": plan.state.best_epoch, "tried": fitted.tried,
              "seconds": round(time.perf_counter() - started, 1)}
    run.write_head_fit(record)
    log.info(f"head fitted to convergence, {fitted.words}: validation accuracy {fitted.val_acc:.4f}, "
             f"balanced {fitted.val_balanced:.4f}, against the loop's {loop_acc:.4f}, {loop_balanced:.4f} → "
             f"{'the converged head is kept' if chosen == 'converged' else 'the loop head is kept'}"
             f" ({record['seconds']:.1f} s)")
    return record


def _linear_key(state: dict) -> str:
    """The state-dict prefix of the head's (last) linear layer."""
    return max((k[:-len(".weight")] for k in state if k.startswith("head.") and k.endswith(".weight")),
               key=lambda k: int(k.rsplit(".", 1)[-1]))
