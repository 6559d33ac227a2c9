"""The learning curve in words: which class more photos would help most, which have levelled off, and
which stay hard whatever the number. Here, below the pages and the report, because the curve is saved
(learning_curve.json) with its sentence and the CLI prints it from there."""
from __future__ import annotations

import numpy as np

LEVELLED = 0.02  # a class whose recall rose by less than this over the last doubling has levelled off
HARD = 0.5  # ... unless its recall is below this: then it stays hard whatever the number


def gains(points: list[dict], classes: list[str]) -> dict[str, float]:
    """Each class's recall gain over the last doubling of the data (the last two points)."""
    if len(points) < 2:
        return {}
    before, after = points[-2]["recall"], points[-1]["recall"]
    return {c: after[c] - before[c] for c in classes if np.isfinite(after[c]) and np.isfinite(before[c])}


def more_photos_sentence(points: list[dict], classes: list[str], names: dict[str, str] | None = None) -> str:
    """Plain sentences: which class more photos would help most, which have levelled off, and which
    stay hard whatever the number (there, more of the same photos are not the answer)."""
    names = names or {}
    rises = gains(points, classes)
    if not rises:
        return "Not enough photos to tell whether more would help."
    shown = lambda c: names.get(c, c)  # noqa: E731
    recall = points[-1]["recall"]
    best = max(rises, key=rises.get)
    parts = []
    if rises[best] >= LEVELLED:
        parts.append(f"More photos of {shown(best)} would help most: the share of its test photos found rose "
                     f"{rises[best] * 100:.0f} points when the training photos doubled.")
    else:
        parts.append("More photos of the same kind would help little: no class improved by "
                     f"{LEVELLED * 100:.0f} points or more when the training photos doubled.")
    rising = [shown(c) for c, g in rises.items() if g >= LEVELLED and c != best]
    if rising:
        parts.append(f"{join(rising)} {'is' if len(rising) == 1 else 'are'} still improving too.")
    flat = [c for c, g in rises.items() if g < LEVELLED and c != best]
    done = [shown(c) for c in flat if recall[c] >= HARD]
    hard = [c for c in flat if recall[c] < HARD]
    if done:
        parts.append(f"{join(done)} {'has' if len(done) == 1 else 'have'} levelled off.")
    for c in hard:
        parts.append(f"{shown(c)} stays hard ({recall[c]:.0%} of its test photos found) and barely improved: more of "
                     "the same photos are unlikely to fix it; check its labels or what sets it apart.")
    return " ".join(parts)


def join(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
