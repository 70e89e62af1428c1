"""User-facing errors.

Anything a user can cause (a bad path, a malformed annotation, an offline hub id) is raised as an
:class:`AetnetError` carrying one clear sentence that names the file, the field and the fix. The CLI
prints these without a traceback and exits with status 2.
"""

from __future__ import annotations


def _restore(cls: type, args: tuple, state: dict) -> Exception:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class AetnetError(Exception):
    """An error caused by user input, with a message fit to print as is."""

    def __reduce__(self):
        # Errors cross process boundaries (OCR pool, DataLoader workers): rebuild them with their
        # exact message and fields, whatever a subclass's constructor takes.
        return _restore, (type(self), self.args, dict(self.__dict__))


class DataError(AetnetError, ValueError):
    """A document, annotation or image that cannot be used as given.

    Args:
        message: what is wrong and how to fix it.
        path: the file concerned, named at the start of the message when given.
        field: the field or line concerned.
    """

    def __init__(self, message: str, path: str | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.field = field
        where = []
        if self.path:
            where.append(self.path)
        if field:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
