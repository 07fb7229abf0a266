"""Moved to `tfcore.training.export` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.export` IS that module.
"""
import sys

from tfcore.training import export as _module

sys.modules[__name__] = _module
