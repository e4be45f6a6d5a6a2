"""Every path of the project, from one place.

Environment overrides exist so tests and CI can run notebooks without touching a user's
results or the committed figures:

- ``S2D_RESULTS``: papermill's executed notebooks, generation cache, checkpoints, metrics (default ``results/``)
- ``S2D_FIGURES``: regenerated tables and figures (default ``figures/``)
- ``S2D_MODELS``: converted model checkpoints, shared across result folders (default ``results/models``)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("S2D_RESULTS", ROOT / "results")).resolve()
FIGURES = Path(os.environ.get("S2D_FIGURES", ROOT / "figures")).resolve()
MODELS = Path(os.environ.get("S2D_MODELS", ROOT / "results" / "models")).resolve()
CACHE = RESULTS / "cache"
CHECKPOINTS = RESULTS / "checkpoints"
METRICS = RESULTS / "metrics"
TRACES = RESULTS / "traces"
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = NOTEBOOKS / "executed"  # the cpu profile's executed notebooks, stripped and committed (s2d_utils.executed)
DATA = ROOT / "data"
GENERATION_CACHE = CACHE / "generations.sqlite"


def ensure(path: Path) -> Path:
    """Create ``path`` (a directory) if needed and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(source: str | Path) -> bool:
    """True for an "owner/name" string that is not an existing local path (a hub model or dataset)."""
    return isinstance(source, str) and not Path(source).expanduser().exists() and bool(_HUB_ID.match(source))
