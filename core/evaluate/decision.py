"""Pass or inspect: the owner groups a run's classes into "pass" and "inspect" and picks a
threshold on the model's probability of "inspect" (the sum over the inspect classes). Saved with
the run (`decision.json`), shown on Results as defects caught against good parts sent to
inspection, and applied on Predict, by `predict --threshold` and in the export's model.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from core.base.errors import BadInput

INSPECT, PASS = "inspect", "pass"


def for_run(run) -> "Decision | None":
    """The owner's pass/inspect rule saved with a run (a `RunDir`), or None."""
    record = run.decision_record()
    return Decision.from_dict(record) if record is not None else None


@dataclass
class Decision:
    inspect: list[str]
    threshold: float = 0.5
    cost_miss: float | None = None  # what a defect that passes costs
    cost_inspection: float | None = None  # what one inspection costs
    labels: list[str] = field(default_factory=list)  # the run's classes, for checking

    def __post_init__(self):
        if not self.inspect:
            raise BadInput("choose at least one class to send to inspection")
        if self.labels and not set(self.inspect) < set(self.labels):
            unknown = sorted(set(self.inspect) - set(self.labels))
            raise BadInput(("unknown classes: " + ", ".join(unknown)) if unknown
                           else "at least one class must pass")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise BadInput(f"the threshold must be between 0 and 1 (got {self.threshold})")
        self.threshold = float(self.threshold)

    @classmethod
    def from_dict(cls, data: dict) -> "Decision":
        if not isinstance(data, dict) or not isinstance(data.get("inspect"), list):
            raise BadInput("decision.json: not a pass/inspect rule")
        try:
            return cls(**{k: data[k] for k in ("inspect", "threshold", "cost_miss", "cost_inspection", "labels")
                          if k in data})
        except (TypeError, ValueError) as err:  # BadInput (a ValueError) keeps its own message
            raise err if isinstance(err, BadInput) else BadInput(f"decision.json: {err}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    def p_inspect(self, probabilities: dict[str, float]) -> float:
        return float(sum(probabilities.get(c, 0.0) for c in self.inspect))

    def verdict(self, probabilities: dict[str, float]) -> str:
        """'inspect' when the probability of an inspect class reaches the threshold, else 'pass'."""
        return INSPECT if self.p_inspect(probabilities) >= self.threshold else PASS


def p_inspect_column(table: pd.DataFrame, inspect: list[str]) -> np.ndarray:
    """The probability of "inspect" for each row of a predictions table (p_<class> columns)."""
    return table[[f"p_{c}" for c in inspect]].astype(float).sum(axis=1).to_numpy()


def _outcome(p: np.ndarray, defect: np.ndarray, threshold: float, cost_miss: float | None,
             cost_inspection: float | None) -> dict:
    flagged = p >= threshold
    caught, missed = int((flagged & defect).sum()), int((~flagged & defect).sum())
    sent_good, passed_good = int((flagged & ~defect).sum()), int((~flagged & ~defect).sum())
    row = {"threshold": float(threshold), "defects": int(defect.sum()), "caught": caught, "missed": missed,
           "good": int((~defect).sum()), "good_sent": sent_good, "good_passed": passed_good,
           "caught_share": caught / max(int(defect.sum()), 1), "good_sent_share": sent_good / max(int((~defect).sum()), 1),
           "inspections": int(flagged.sum())}
    if cost_miss is not None and cost_inspection is not None:
        row["cost"] = missed * float(cost_miss) + int(flagged.sum()) * float(cost_inspection)
    return row


def at_threshold(table: pd.DataFrame, inspect: list[str], threshold: float,
                 cost_miss: float | None = None, cost_inspection: float | None = None) -> dict:
    """What the rule does on labelled images: defects caught, good parts sent to inspection, costs."""
    return _outcome(p_inspect_column(table, inspect), table["label"].isin(inspect).to_numpy(), threshold,
                    cost_miss, cost_inspection)


def sweep(table: pd.DataFrame, inspect: list[str], steps: int = 101, cost_miss: float | None = None,
          cost_inspection: float | None = None) -> pd.DataFrame:
    """`at_threshold` for thresholds 0, 0.01, … 1 (the probabilities summed once): the curve the
    Results page draws."""
    p, defect = p_inspect_column(table, inspect), table["label"].isin(inspect).to_numpy()
    return pd.DataFrame([_outcome(p, defect, t, cost_miss, cost_inspection) for t in np.linspace(0.0, 1.0, steps)])
