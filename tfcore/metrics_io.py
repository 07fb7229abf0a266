"""Moved to `tfcore.training.metrics_io` (the training machinery lives in tfcore/training/).

This alias keeps the old import path working: `tfcore.metrics_io` IS that module.
"""
import sys

from tfcore.training import metrics_io as _module

sys.modules[__name__] = _module
