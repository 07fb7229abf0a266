"""Moved to `tfcore.training.lr_schedule` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.lr_schedule` IS that module.
"""
import sys

from tfcore.training import lr_schedule as _module

sys.modules[__name__] = _module
