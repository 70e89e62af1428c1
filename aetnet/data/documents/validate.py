"""Field checks shared by every reader: presence and type, one clear :class:`DataError` each.

Every value a reader takes from a user's file (a FUNSD entity, a CORD quad, a DocVQA question, an
RVL-CDIP label, a Hugging Face row) goes through these functions, so a malformed value fails the
same way everywhere: one sentence naming the file, the field path (``form[3].words[0].box[1]``)
and the fix, instead of a ``ValueError`` or ``AttributeError`` from deep inside a reader.

Example:
    >>> entity = expect_object(raw, "form[3]", path)
    >>> box = expect_box(require(entity, "box", "form[3]", path), "form[3].box", path)
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aetnet.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

#: The fix appended to every type error unless a reader gives a more precise one.
DEFAULT_FIX = "correct it in the file, or pass --on-bad-document skip to leave this document out"

_MISSING = object()


def at(parent: str, key: str | int) -> str:
    """The path of ``key`` under ``parent``: ``at("form", 3) == "form[3]"``, ``at("form[3]", "id") == "form[3].id"``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def describe(value: Any) -> str:
    """A short, user-facing description of a JSON value (``the string '12a'``, ``null``, ``a list of 3 items``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, int) and abs(value) >= 10 ** 40:
        return f"a {len(str(abs(value)))}-digit integer"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


#: Integers from a file must stay below this (JSON's safe-integer range; 10**400 overflows a float).
_BIG = 2 ** 53


def _fail(expected: str, value: Any, field: str, source: Any, fix: str | None) -> DataError:
    return DataError(f"expected {expected}, got {describe(value)}; {fix or DEFAULT_FIX}", source, field)


def expect_object(value: Any, field: str, source: Any, fix: str | None = None) -> dict:
    """``value`` if it is a JSON object (dict), else a :class:`DataError` naming ``field`` in ``source``."""
    if not isinstance(value, dict):
        raise _fail("an object", value, field, source, fix)
    return value


def expect_list(value: Any, field: str, source: Any, fix: str | None = None) -> list:
    """``value`` as a list if it is a JSON array (list or tuple)."""
    if not isinstance(value, (list, tuple)):
        raise _fail("a list", value, field, source, fix)
    return list(value)


def expect_number(value: Any, field: str, source: Any, fix: str | None = None) -> float:
    """``value`` as a finite float: a JSON number, or a string holding one (``"12"``); never a boolean."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail("a number", value, field, source, fix)
    try:
        number = float(value)
    except OverflowError:  # an integer past the float range (10**400)
        raise _fail("a finite number", value, field, source, fix) from None
    except ValueError:
        raise _fail("a number", value, field, source, fix) from None
    if not math.isfinite(number):
        raise _fail("a finite number", value, field, source, fix)
    return number


def expect_integer(value: Any, field: str, source: Any, fix: str | None = None) -> int:
    """``value`` as an int: a JSON integer, a whole float (``3.0``) or a string of digits (``"3"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail("an integer", value, field, source, fix)
    if isinstance(value, int):
        if not -_BIG < value < _BIG:  # ids, indices and sizes of this size are mistakes (10**400 overflows)
            raise _fail("an integer below 2**53", value, field, source, fix)
        return value
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise _fail("an integer", value, field, source, fix) from None
    if not number.is_integer() or not -_BIG < number < _BIG:
        raise _fail("an integer below 2**53" if number.is_integer() else "an integer", value, field, source, fix)
    return int(number)


def expect_string(value: Any, field: str, source: Any, fix: str | None = None, empty: bool = True) -> str:
    """``value`` if it is a string (a non-empty one when ``empty`` is False)."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise _fail("a string" if empty else "a non-empty string", value, field, source, fix)
    return value


def expect_text(value: Any, field: str, source: Any, fix: str | None = None) -> str:
    """A word's text: a string, or a number written as one (``12`` -> ``"12"``); lists, objects,
    booleans and null are refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail("a text string", value, field, source, fix)
    return value if isinstance(value, str) else str(value)


def expect_box(value: Any, field: str, source: Any, size: int = 4, fix: str | None = None) -> list[float]:
    """``size`` numbers (``[x0, y0, x1, y1]`` by default), each checked with :func:`expect_number`."""
    if isinstance(value, (list, tuple)) and len(value) == size and all(
            type(v) is float and math.isfinite(v) or type(v) is int and -_BIG < v < _BIG for v in value):
        return [float(v) for v in value]  # the common case, checked without building field names
    shape = "[x0, y0, x1, y1]" if size == 4 else f"{size} numbers"
    if not isinstance(value, (list, tuple)) or len(value) != size:
        raise _fail(f"a list of {size} numbers {shape}", value, field, source, fix)
    return [expect_number(v, at(field, i), source, fix) for i, v in enumerate(value)]


#: The checks by kind name, for :func:`require`.
KINDS: dict[str, Callable[..., Any]] = {
    "object": expect_object,
    "list": expect_list,
    "number": expect_number,
    "integer": expect_integer,
    "string": expect_string,
    "text": expect_text,
    "box": expect_box,
}

_ARTICLE = {"object": "an object", "list": "a list", "number": "a number", "integer": "an integer",
            "string": "a string", "text": "a text string", "box": "a box [x0, y0, x1, y1]"}


def require(
    obj: dict, key: str, kind: str, parent: str, source: Any, optional: bool = False, default: Any = None,
    fix: str | None = None,
) -> Any:
    """``obj[key]`` checked to be present, not null and of ``kind`` (a key of :data:`KINDS`).

    Args:
        obj: the object holding the field (already checked with :func:`expect_object`).
        key: the field name.
        kind: ``object``, ``list``, ``number``, ``integer``, ``string``, ``text`` or ``box``.
        parent: the path of ``obj`` (``"form[3]"``); the error names ``parent.key``.
        source: the file (or dataset row) named in the error.
        optional: a missing or null field gives ``default`` instead of an error.
        default: the value of an absent optional field.
        fix: what the user should do, when more precise than :data:`DEFAULT_FIX`.

    Raises:
        DataError: the field is missing, null or of the wrong type.
    """
    field = at(parent, key)
    value = obj.get(key, _MISSING)
    if value is _MISSING or value is None:
        if optional:
            return default
        state = "missing" if value is _MISSING else "null"
        raise DataError(f"is {state}; expected {_ARTICLE[kind]}: {fix or DEFAULT_FIX}", source, field)
    return KINDS[kind](value, field, source, fix=fix)


def expect_image(stored: Any, field: str, source: Any) -> Image.Image:
    """A Hugging Face ``Image(decode=False)`` cell (``{"bytes", "path"}``) opened lazily (header only).

    Raises:
        DataError: the cell is null, holds neither bytes nor an existing file, or is not an image.
    """
    from PIL import Image, UnidentifiedImageError

    if not isinstance(stored, dict) or not (stored.get("bytes") or stored.get("path")):
        raise _fail("an image (bytes or a file path)", stored, field, source, None)
    try:
        from aetnet.data.ocr.images import upright

        # upright: the page as shown (EXIF orientation); decoded here only when it is turned
        if stored.get("bytes"):
            return upright(Image.open(io.BytesIO(stored["bytes"])))
        return upright(Image.open(stored["path"]))
    except Image.DecompressionBombError as exc:
        raise DataError(f"image is too large to be a page ({exc}); downscale it", source, field) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"image cannot be read ({exc}); replace it or leave the row out", source, field) from None


def read_json(path: Path, what: str = "JSON") -> Any:
    """Parse a JSON file; a missing file, non-UTF-8 bytes or invalid JSON give one :class:`DataError`.

    Args:
        path: the file.
        what: what the file should be, named in the fix (``"a FUNSD annotation"``).
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError("file does not exist; check the path", path) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"file is not UTF-8 text (byte {exc.start}); re-save {what} as UTF-8", path) from None
    except OSError as exc:
        raise DataError(f"file cannot be read ({exc.strerror}); check its permissions", path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); fix or re-export {what}", path
        ) from None
