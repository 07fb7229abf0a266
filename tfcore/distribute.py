"""Moved to `tfcore.training.distribute` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.distribute` IS that module.
"""
import sys

from tfcore.training import distribute as _module

sys.modules[__name__] = _module
