"""The training loop's named steps (callbacks, in the spirit of fastai's): each hears the loop's
events and does one thing.

- `StopWatch`: ends the run between batches when a stop was asked for (the run store's flag,
  SIGTERM, Ctrl-C); under torchrun every rank agrees.
- `EarlyStopping`: ends the run when validation loss has not improved for `patience` epochs.
- `StoreReporter`: per-batch losses (throttled), progress with an ETA, and per-epoch metrics into
  the run store, for the dashboard's live view.
- `Checkpointer`: `best.pt` when validation loss improved, then `last.pt` (after the metrics, so a
  kill in between replays the epoch on resume rather than losing its row).
- `ConsoleReporter`: the CLI's progress bar and one line per epoch.

The loop (`train.run_loop`) calls, in order: `on_start`, `on_batch` after every batch,
`on_epoch` after every epoch, `on_end` once.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from core.base import distributed
from core.base.errors import log


class StopTraining(Exception):
    """Raised between batches when a stop was requested."""


@dataclass
class LoopState:
    """What the loop knows between epochs (saved in last.pt, restored on resume)."""

    epochs: int
    epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    best_val_acc: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    improved: bool = False
    stop_reason: str | None = None

    def record(self, val_loss: float, val_acc: float) -> None:
        self.improved = val_loss < self.best_val_loss
        if self.improved:
            self.best_val_loss, self.best_val_acc, self.best_epoch, self.bad_epochs = val_loss, val_acc, self.epoch, 0
        else:
            self.bad_epochs += 1

    def saved(self) -> dict:
        keep = ("epoch", "best_val_loss", "best_val_acc", "best_epoch", "bad_epochs")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class EpochRow:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float


class Step:
    """A loop extra; override the events it cares about."""

    def on_start(self, state: LoopState, steps_per_epoch: int) -> None: ...

    def on_batch(self, state: LoopState, loss: float) -> None: ...

    def on_epoch(self, state: LoopState, row: EpochRow) -> None: ...

    def on_end(self, state: LoopState, status: str) -> None: ...


class StopWatch(Step):
    """Raises `StopTraining` between batches on a stop request (checked every `every_s`) or a signal."""

    def __init__(self, requested=lambda: False, every_s: float = 0.5):
        self.requested, self.every_s = requested, every_s
        self.signalled = False
        self._last = 0.0

    def on_batch(self, state: LoopState, loss: float) -> None:
        single = distributed.world_size() == 1
        now = time.monotonic()
        if single and self.signalled:
            state.stop_reason = "stop requested"
            raise StopTraining
        if single and now - self._last < self.every_s:
            return  # under torchrun every rank checks every batch, so the broadcasts line up
        self._last = now
        if distributed.broadcast_flag(self.signalled or bool(self.requested())):
            state.stop_reason = "stop requested"
            raise StopTraining


class Deadline(Step):
    """Ends the loop between batches once the time limit is reached (`reached` says it did), and
    before an epoch that would not finish in time."""

    def __init__(self, deadline: float, finish_an_epoch: bool = False):
        """`finish_an_epoch`: never cut the run's first epoch, so a run always ends with a model."""
        self.deadline, self.reached, self.finish_an_epoch = deadline, False, finish_an_epoch

    def on_batch(self, state: LoopState, loss: float) -> None:
        if self.finish_an_epoch and state.best_val_acc is None:
            return
        if time.monotonic() >= self.deadline:
            self.reached, state.stop_reason = True, "time limit reached"
            raise StopTraining

    def on_epoch(self, state: LoopState, row: EpochRow) -> None:
        if time.monotonic() + row.seconds > self.deadline:
            self.reached, state.stop_reason = True, "time limit reached (another epoch would not finish in time)"


class EarlyStopping(Step):
    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch(self, state: LoopState, row: EpochRow) -> None:
        if state.bad_epochs >= self.patience:
            state.stop_reason = f"early stopping: val loss has not improved for {self.patience} epochs"


class StoreReporter(Step):
    """Writes the run's live metrics: batches and progress at most once a second, each epoch."""

    def __init__(self, store, run_id: str, every_s: float = 1.0):
        self.store, self.run_id, self.every_s = store, run_id, every_s
        self.pending: list[tuple[int, int, float]] = []
        self._last = time.monotonic()
        self._phase, self._phase_start, self._phase_first = None, 0.0, 0
        self.extra: dict = {}  # carried with every progress write (a time-limited run's stage)

    def phase(self, name: str, done: int, total: int) -> None:
        """Progress of the work before the epochs (feature extraction), throttled, with an ETA
        from this phase's own pace."""
        now = time.monotonic()
        if self._phase != name:
            self._phase, self._phase_start, self._phase_first = name, now, done
        if done == total or now - self._last > self.every_s:
            rate = (done - self._phase_first) / max(now - self._phase_start, 1e-6)
            eta = (total - done) / rate if rate > 0 else None
            self.store.set_progress(self.run_id, phase=name, phase_done=done, phase_total=total, phase_eta=eta,
                                    **self.extra)
            self._last = now

    def on_start(self, state: LoopState, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.first_step, self.started = state.step, time.monotonic()

    def on_batch(self, state: LoopState, loss: float) -> None:
        self.pending.append((state.epoch, state.step, loss))
        if time.monotonic() - self._last > self.every_s:
            self.flush(state)

    def on_epoch(self, state: LoopState, row: EpochRow) -> None:
        self.store.log_epoch(self.run_id, row.epoch, train_loss=row.train_loss, train_acc=row.train_acc,
                             val_loss=row.val_loss, val_acc=row.val_acc, lr=row.lr, seconds=row.seconds)
        self.store.update(self.run_id, best_epoch=state.best_epoch, best_val_loss=state.best_val_loss,
                          best_val_acc=state.best_val_acc)
        self.flush(state)

    def flush(self, state: LoopState) -> None:
        if self.pending:
            self.store.log_batches(self.run_id, self.pending)
            self.pending = []
        elapsed = time.monotonic() - self.started
        total = state.epochs * self.steps_per_epoch
        eta = elapsed / max(state.step - self.first_step, 1) * (total - state.step)
        self.store.set_progress(self.run_id, phase="train", epoch=state.epoch, epochs=state.epochs,
                                step=state.step, steps=total, elapsed=elapsed, eta=eta,
                                bad_epochs=state.bad_epochs, best_val_acc=state.best_val_acc,
                                best_epoch=state.best_epoch, **self.extra)
        self._last = time.monotonic()


class Checkpointer(Step):
    """best.pt on improvement, then last.pt with everything resume needs."""

    def __init__(self, run, model, optimizer, scheduler):
        self.run, self.model, self.optimizer, self.scheduler = run, model, optimizer, scheduler

    def on_epoch(self, state: LoopState, row: EpochRow) -> None:
        if state.improved:
            self.run.save_best(self.model.state_dict())
        self.run.save_last({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), **state.saved()})


class ConsoleReporter(Step):
    """A tqdm bar over the batches and one line per epoch (the CLI's view)."""

    def __init__(self, patience: int, enabled: bool = True):
        self.patience, self.enabled, self.bar = patience, enabled, None

    def on_start(self, state: LoopState, steps_per_epoch: int) -> None:
        self.bar = tqdm(total=(state.epochs - state.epoch) * steps_per_epoch, desc="train", unit="batch",
                        disable=not self.enabled)

    def on_batch(self, state: LoopState, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}")

    def on_epoch(self, state: LoopState, row: EpochRow) -> None:
        note = "  *best*" if state.improved else f"  (no improvement {state.bad_epochs}/{self.patience})"
        self.bar.write(f"epoch {row.epoch}/{state.epochs}: train loss {row.train_loss:.4f} acc {row.train_acc:.3f} | "
                       f"val loss {row.val_loss:.4f} acc {row.val_acc:.3f} | {row.seconds:.1f} s{note}")

    def on_end(self, state: LoopState, status: str) -> None:
        if self.bar is not None:
            self.bar.close()
        if state.stop_reason:
            log.info(state.stop_reason + (f"; best checkpoint (epoch {state.best_epoch}) kept"
                                          if status == "stopped" else ""))


class OnEpoch(Step):
    """Calls `callback(epoch, model)` after each epoch (benchmarks measure accuracy over time)."""

    def __init__(self, callback, model):
        self.callback, self.model = callback, model

    def on_epoch(self, state: LoopState, row: EpochRow) -> None:
        self.callback(row.epoch, self.model)
