import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("REALISTIC_AL_QUIET", "1")


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(0)
