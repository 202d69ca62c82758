"""sfprompt: a Ray-native simulation platform for split federated prompt tuning.

The code lives in the top-level folders `platform/`, `actors/`, `studies/` and
`results/`, which are importable only as `sfprompt.platform`, `sfprompt.actors`, ...:
`platform` is also a standard-library module, so those folders have no `__init__.py`
and are never top-level packages. A wheel maps them here through
`[tool.setuptools.package-dir]`; in a source checkout (editable install or plain
`PYTHONPATH`) we append the checkout root to this package's path so the same names
resolve to the folders beside us.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# torch's CUDA wheels import triton, their GPU kernel compiler, with torch._dynamo (which
# timm imports through torchvision) and with FLOP counting (platform/wire/flops.py): a
# 500 MB library, part of it resident in every process, that nothing calls without a
# GPU. Without an NVIDIA driver triton is absent here, as in torch's CPU builds; set
# before any of those imports, so here.
if not _os.path.exists("/dev/nvidiactl"):
    _sys.modules.setdefault("triton", None)

_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(
    _os.path.join(_root, "platform")
):
    __path__.append(_root)  # noqa: F821 - __path__ is set for packages

# The Python API (api.py: the names of its __all__), imported on first use: every command
# and results/rundir.py (for __version__) import this root, so it imports nothing itself.


def __getattr__(name):
    # By name, not `from sfprompt import api`: this root stays a module every other may
    # import (results/rundir.py reads __version__) without an import cycle.
    import importlib
    api = importlib.import_module("sfprompt.api")
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'sfprompt' has no attribute {name!r}")


def __dir__():
    import importlib
    return sorted([*globals(), *importlib.import_module("sfprompt.api").__all__])
