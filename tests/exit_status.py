"""Run by ``tests/test_distributed.py`` under torchrun, not collected by pytest: the ``metarun``
command in this process (its signal handling included), which writes its exit status to
``$METARUN_EXIT_STATUS_DIR/rank<RANK>`` on the way out. torchrun reports its own status (1 after
it was signalled), never its workers', so this is how a test sees what each rank exited with."""

from __future__ import annotations

import os
from pathlib import Path

from metarun.cli import main

if __name__ == "__main__":
    status = 1  # an exception other than SystemExit
    try:
        main()
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        raise
    finally:
        folder = Path(os.environ["METARUN_EXIT_STATUS_DIR"])
        (folder / f"rank{os.environ['RANK']}").write_text(str(status))
