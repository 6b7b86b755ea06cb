"""The ``numpy`` backend: the reference implementations behind the public API."""

from .reference import adadelta, adagrad, adam, adamw, rmsprop, sgd

__all__ = ["adadelta", "adagrad", "adam", "adamw", "rmsprop", "sgd"]
