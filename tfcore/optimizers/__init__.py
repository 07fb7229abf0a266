"""Optimizers: Keras 3's SGD, Adam, Adadelta and RMSprop as `tf.Module`s.

Each optimizer's update is a module-level pure function (`sgd_update`,
`adam_update`, `adadelta_update`, `rmsprop_update`) whose docstring gives the
formula; the classes hold the state (`iterations`, `learning_rate`, slots) and
apply it. `get(name, **kwargs)` builds one by name.
"""
from __future__ import annotations

from tfcore.optimizers.adadelta import Adadelta, adadelta_update
from tfcore.optimizers.adam import Adam, adam_update
from tfcore.optimizers.optimizer import Optimizer
from tfcore.optimizers.rmsprop import RMSprop, rmsprop_update
from tfcore.optimizers.sgd import SGD, sgd_update

_BY_NAME = {"sgd": SGD, "adam": Adam, "adadelta": Adadelta, "rmsprop": RMSprop}


def get(name, **kwargs) -> Optimizer:
    """An optimizer from its name (case-insensitive: 'sgd', 'adam', 'adadelta',
    'rmsprop') and constructor keyword arguments; an `Optimizer` instance is
    returned as is (then no kwargs are allowed).

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if isinstance(name, Optimizer):
        if kwargs:
            raise ValueError(f"kwargs given with an optimizer instance: {sorted(kwargs)}")
        return name
    cls = _BY_NAME.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; expected one of "
                         f"{sorted(_BY_NAME)} or an Optimizer instance")
    return cls(**kwargs)


__all__ = ["Optimizer", "SGD", "Adam", "Adadelta", "RMSprop", "get", "sgd_update",
           "adam_update", "adadelta_update", "rmsprop_update"]
