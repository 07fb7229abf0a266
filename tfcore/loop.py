"""Moved to `tfcore.training.loop` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.loop` IS that module.
"""
import sys

from tfcore.training import loop as _module

sys.modules[__name__] = _module
