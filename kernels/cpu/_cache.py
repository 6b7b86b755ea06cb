"""Where fastopt's compiled CPU kernels are cached on disk: never inside the installed package.

Numba's ``cache=True`` writes next to the source file when that folder is writable. For an
installed fastopt that is ``site-packages/fastopt/kernels/cpu/__pycache__``: pip does not
record those files, so uninstalling leaves a ``fastopt`` folder behind that then shadows a
later (editable) install as an empty namespace package. Read-only installs got no cache at all.

fastopt's kernels therefore use their own locator: ``NUMBA_CACHE_DIR`` when the user set it
(Numba's own switch keeps winning), else a per-user cache folder keyed by fastopt's version,
``$XDG_CACHE_HOME/fastopt/<version>`` on Linux (``~/.cache/fastopt/<version>``), the
platform's user cache folder elsewhere. Where neither can be written, kernels compile in
memory each process (correct, only slower to start).
"""

import os

from numba.core import config
from numba.core.caching import (CompileResultCacheImpl, FunctionCache, NullCache,
                                UserProvidedCacheLocator, _CacheLocator,
                                _SourceFileBackedLocatorMixin)
from numba.misc.appdirs import AppDirs

from ..._version import __version__


def user_cache_dir():
    """fastopt's per-user kernel cache folder for this version (it may not exist yet)."""
    return os.path.join(AppDirs(appname="fastopt", appauthor=False).user_cache_dir, __version__)


def cache_dir():
    """The folder kernels are cached under now: ``NUMBA_CACHE_DIR`` if set, else the user's."""
    return config.CACHE_DIR or user_cache_dir()


class UserCacheLocator(_SourceFileBackedLocatorMixin, _CacheLocator):
    """Numba's locator protocol, pointing at ``user_cache_dir()``.

    Each source folder gets its own subfolder (Numba's hashed naming), so an editable checkout
    and an installed copy of the same version never share entries.
    """

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(user_cache_dir(),
                                        self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path


class KernelCacheImpl(CompileResultCacheImpl):
    # No in-tree locator: a cache must never land inside site-packages.
    _locator_classes = [UserProvidedCacheLocator, UserCacheLocator]


class KernelCache(FunctionCache):
    _impl_class = KernelCacheImpl


def kernel_cache(py_func, cls=KernelCache, *args):
    """The on-disk cache for a kernel's ``py_func`` (``cls(py_func, *args)``), or, where no
    cache folder can be written, Numba's no-op cache."""
    try:
        return cls(py_func, *args)
    except RuntimeError:  # Numba: "no locator available" (every candidate folder unwritable)
        return NullCache()
