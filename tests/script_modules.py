"""Loading a file of scripts/ as a module, for the tests of its parts that need no run."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCHMARKS = SCRIPTS / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as the module ``<name>_script``."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def load_benchmark(name: str) -> ModuleType:
    """``scripts/benchmarks/<name>.py`` under its own name, its folder on ``sys.path`` as when
    it runs, so that it and its siblings share one copy of the modules they import."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    module = importlib.import_module(name)
    if Path(module.__file__).resolve().parent != BENCHMARKS:  # another module of that name
        raise ImportError(f"{name} is {module.__file__}, not scripts/benchmarks/{name}.py")
    return module
