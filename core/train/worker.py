"""The background training process the dashboard starts: `python -m core.train.worker RUN_DIR`.

It reads the run's request.json (a TrainConfig with absolute paths), takes over the runs folder's
training slot from the process that started it, lowers its own scheduling priority so the
dashboard stays responsive, trains into the run, and releases the slot.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from core.base.errors import GraftError, log, setup_logging
from core.base.runtime import lower_priority
from core.base.storage import read_json
from core.runs.folder import RunDir
from core.runs.store import RunStore
from core.train.config import TrainConfig
from core.train.session import fit

NICENESS = 10  # below the dashboard server; an otherwise idle machine gives the same speed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.train.worker RUN_DIR", file=sys.stderr)
        return 2
    setup_logging()
    run = RunDir(Path(argv[0]).absolute())
    store = RunStore.open(run.path.parent)
    lower_priority(NICENESS)
    try:
        config = TrainConfig.from_dict(read_json(run.request_file))
        store.claim(run.id, os.getpid(), handover_from=os.getppid())
    except (GraftError, OSError, ValueError) as err:
        log.error(str(err))
        store.finish(run.id, "failed", str(err))
        return err.exit_code if isinstance(err, GraftError) else 2
    try:
        fit(config, store.root, run_id=run.id)
    finally:
        store.release(run.id)
    return 0 if store.get(run.id)["status"] in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
