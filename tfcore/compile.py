"""Moved to `tfcore.training.compile` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.compile` IS that module.
"""
import sys

from tfcore.training import compile as _module

sys.modules[__name__] = _module
