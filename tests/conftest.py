import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    # keep the test run's compile cache out of the user's cache
    if "TENSORFORGE_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["TENSORFORGE_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "tensorforge-test-cache")


@pytest.fixture
def rng(request):
    """A fresh random generator per test (seeded from the test name, so failures reproduce)."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
