"""Moved to `tfcore.training.checkpointing` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.checkpointing` IS that module.
"""
import sys

from tfcore.training import checkpointing as _module

sys.modules[__name__] = _module
