"""Task adapters, installed as ``aetnet.tasks``: one module per downstream task.

Importing this package registers every built-in task in :data:`aetnet.registry.TASKS`.
"""

if __name__ != "aetnet.tasks":  # pragma: no cover - guard against a second registration
    raise ImportError(
        "the task adapters must be imported as 'aetnet.tasks', not as top-level 'tasks'; "
        "install the package (pip install -e .) and run pytest with --import-mode=importlib"
    )

from aetnet.tasks import (
    cord,  # noqa: E402,F401
    docvqa,  # noqa: E402,F401
    funsd,  # noqa: E402,F401
    funsd_re,  # noqa: E402,F401
    generic,  # noqa: E402,F401
    own_re,  # noqa: E402,F401
    rvl_cdip,  # noqa: E402,F401
    xfund,  # noqa: E402,F401
)
