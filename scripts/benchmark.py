"""The benchmarks' old entry point, kept so that earlier commands still work: each benchmark is
its own module in scripts/benchmarks/, and this passes the rest of the command line to one.

    python scripts/benchmark.py [...]             # scripts/benchmarks/maml_protonet.py [...]
    python scripts/benchmark.py --family [...]    # scripts/benchmarks/family.py [...]
    python scripts/benchmark.py --learners [...]  # scripts/benchmarks/learners.py [...]
    python scripts/benchmark.py --data [...]      # scripts/benchmarks/data_loading.py [...]
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

MODES = {"--family": "family", "--learners": "learners", "--data": "data_loading"}


def main(argv: list[str]) -> None:
    modes = [arg for arg in argv if arg in MODES]
    if len(modes) > 1:
        sys.exit("benchmark.py: --family, --learners and --data are separate runs; give one")
    name = MODES[modes[0]] if modes else "maml_protonet"
    sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
    importlib.import_module(name).main([arg for arg in argv if arg not in MODES])


if __name__ == "__main__":
    main(sys.argv[1:])
