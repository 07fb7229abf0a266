"""Moved to `tfcore.training.callbacks` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.callbacks` IS that module.
"""
import sys

from tfcore.training import callbacks as _module

sys.modules[__name__] = _module
