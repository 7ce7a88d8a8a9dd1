"""The PyTorch backend's tests need torch (the ``torch`` extra); without it they are skipped."""

import importlib.util

if importlib.util.find_spec("torch") is None:
    collect_ignore_glob = ["test_*.py"]
