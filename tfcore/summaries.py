"""Moved to `tfcore.training.summaries` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.summaries` IS that module.
"""
import sys

from tfcore.training import summaries as _module

sys.modules[__name__] = _module
