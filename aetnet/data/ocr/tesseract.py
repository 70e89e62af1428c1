"""Word-level OCR with Tesseract, cached on disk.

Tasks whose datasets ship images without words (RVL-CDIP, DocVQA without its OCR files) read their
words and boxes through :func:`ocr_image`. Tesseract takes about a second a page, so results are
cached as JSON keyed by the image content, the OCR settings and the Tesseract version: a page is
recognised once, whatever the run, and a Tesseract upgrade never serves stale words.

The cache lives in ``$AETNET_CACHE/ocr`` when the ``AETNET_CACHE`` environment variable is set
(it names aetnet's cache root), ``~/.cache/aetnet/ocr`` otherwise, or in ``cache_dir`` when given.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from aetnet.data.documents.page_refs import DatasetRow
from aetnet.data.ocr.images import orientation, upright
from aetnet.errors import AetnetError, DataError

logger = logging.getLogger(__name__)
_ENV_LOCK = threading.Lock()

#: Bump when the cached record's layout changes, so old files are ignored rather than misread.
_CACHE_FORMAT = 1

_INSTALL_HINT = (
    "install it (Debian/Ubuntu: `apt-get install tesseract-ocr`; macOS: `brew install tesseract`) "
    "or set pytesseract.pytesseract.tesseract_cmd to its path"
)


@dataclass
class OcrSettings:
    """How Tesseract is run; saved in run configs so that a result can be reproduced.

    Attributes:
        lang: Tesseract language(s), ``"eng"`` or several joined by ``+`` (``"eng+fra"``).
        psm: page segmentation mode (3: fully automatic, 6: a single block of text, ...).
        oem: OCR engine mode (0-3), or ``None`` for Tesseract's default.
    """

    lang: str = "eng"
    psm: int = 3
    oem: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (``lang``, ``psm``, ``oem``), fit for YAML/JSON configs."""
        return asdict(self)

    def tesseract_config(self) -> str:
        """The command-line flags for these settings (``--psm 3 --oem 1``)."""
        flags = f"--psm {int(self.psm)}"
        if self.oem is not None:
            flags += f" --oem {int(self.oem)}"
        return flags


def default_cache_dir() -> Path:
    """``$AETNET_CACHE/ocr`` when ``AETNET_CACHE`` is set, else ``~/.cache/aetnet/ocr``."""
    root = os.environ.get("AETNET_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "aetnet"
    return base / "ocr"


def _pytesseract():
    try:
        import pytesseract
    except ImportError:  # pragma: no cover - a declared dependency
        raise AetnetError("pytesseract is not installed; run `pip install pytesseract`") from None
    return pytesseract


@functools.lru_cache(maxsize=8)
def _tesseract_facts(cmd: str) -> tuple[str, frozenset[str]]:
    """Version and installed languages of the Tesseract binary ``cmd`` (one lookup per binary)."""
    pytesseract = _pytesseract()
    try:
        version = str(pytesseract.get_tesseract_version())
        languages = frozenset(pytesseract.get_languages(config=""))
    except pytesseract.TesseractNotFoundError:
        raise AetnetError(f"the Tesseract OCR binary '{cmd}' was not found; {_INSTALL_HINT}") from None
    return version, languages


def tesseract_version() -> str:
    """The version of the Tesseract binary pytesseract will run.

    Raises:
        AetnetError: the binary is missing.
    """
    pytesseract = _pytesseract()
    return _tesseract_facts(str(pytesseract.pytesseract.tesseract_cmd))[0]


def _check_languages(lang: str, installed: frozenset[str]) -> None:
    missing = [code for code in lang.split("+") if code and code not in installed]
    if missing or not lang.strip("+"):
        raise AetnetError(
            f"Tesseract language pack(s) {', '.join(missing) or repr(lang)} not installed "
            f"(installed: {', '.join(sorted(installed)) or 'none'}); install them, e.g. "
            f"`apt-get install tesseract-ocr-{(missing or ['eng'])[0]}`, or choose another ocr lang"
        )


PageSource = Image.Image | str | Path | bytes | DatasetRow
"""A page to recognise: a PIL image, an image file, its encoded bytes, or a dataset row."""


def _content(image: PageSource) -> bytes:
    """The bytes that identify a page's content, for the cache key.

    A file, its encoded bytes and a dataset row holding those bytes give the same key: the key is
    the encoded file, never pixels decoded from it (no decoding on a cache hit).
    """
    if isinstance(image, DatasetRow):
        image = image.read()
    if isinstance(image, bytes):
        return image
    if isinstance(image, Image.Image):
        # Raw pixels plus mode and size identify the page exactly and, unlike an encoded PNG,
        # do not depend on the zlib/Pillow version that would encode it.
        header = f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode()
        return header + image.tobytes()
    path = Path(image)
    if not path.is_file():
        raise DataError("image file does not exist; check the path or the dataset layout", path, "image")
    return path.read_bytes()


def _decode(image: PageSource, content: bytes) -> Image.Image:
    """The page to recognise; decoded only on a cache miss (``content``: its bytes from :func:`_content`)."""
    if isinstance(image, Image.Image):
        return image
    name = image if isinstance(image, (str, Path, DatasetRow)) else "<image bytes>"
    try:
        with Image.open(io.BytesIO(content)) as img:
            img.seek(0)  # multi-page TIFFs: the first page is the document page
            img.load()
            page = upright(img)  # the page as shown (EXIF orientation), as every other reader sees it
            return page.copy() if page is img else page
    except Image.DecompressionBombError as exc:
        raise DataError(f"image is too large to be a page ({exc}); downscale it", name, "image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow names the in-memory buffer in this message; the file is named by the error instead.
        reason = "not an image format Pillow recognises" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise DataError(f"image cannot be decoded ({reason}); re-export or remove it", name, "image") from None


def _stored_orientation(image: PageSource, content: bytes) -> int:
    """The EXIF orientation of an encoded page (header only); 1 for a PIL image (made upright before)."""
    if isinstance(image, Image.Image):
        return 1
    try:
        with Image.open(io.BytesIO(content)) as img:
            return orientation(img)
    except Exception:  # not an image: _decode reports it on the cache miss
        return 1


def _cache_key(content: bytes, settings: OcrSettings, version: str, turned: int = 1) -> str:
    digest = hashlib.sha256(content)
    fields = {"settings": settings.as_dict(), "tesseract": version, "format": _CACHE_FORMAT}
    if turned != 1:  # recognised upright (keys of pages without an orientation tag are unchanged)
        fields["upright_from_orientation"] = turned
    meta = json.dumps(fields, sort_keys=True)
    digest.update(meta.encode())
    return digest.hexdigest()


def _read_cache(path: Path) -> tuple[list[str], list[list[float]]] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        words, boxes = record["words"], record["boxes"]
        if len(words) != len(boxes):
            raise ValueError("words and boxes differ in length")
        return [str(w) for w in words], [[float(v) for v in b] for b in boxes]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # A half-written or foreign file is not worth failing a run over: recompute it.
        logger.warning("ignoring unreadable OCR cache file %s (%s)", path, exc)
        return None


def _write_cache(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so that parallel workers never read a half-written file; the temporary name
    # does not end in .json, so a file left by a killed worker never passes for a cache entry.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not write OCR cache file %s (%s)", path, exc)
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def _single_threaded_tesseract():
    """``OMP_THREAD_LIMIT=1`` for the Tesseract child process only.

    Tesseract's OpenMP threads fight over a page (about 3x slower on 2 cores). The variable must not
    leak into this process's later children: a PyTorch process started with a limit below its
    thread count computes wrong convolution gradients (see :mod:`aetnet.threads`). This process's
    own OpenMP runtime read its environment at start-up and is unaffected. A user's setting wins.
    """
    if "OMP_THREAD_LIMIT" in os.environ:
        yield
        return
    with _ENV_LOCK:
        os.environ["OMP_THREAD_LIMIT"] = "1"
        try:
            yield
        finally:
            os.environ.pop("OMP_THREAD_LIMIT", None)


def _run_tesseract(page: Image.Image, settings: OcrSettings) -> tuple[list[str], list[list[float]]]:
    pytesseract = _pytesseract()
    if page.mode not in ("1", "L", "RGB", "RGBA"):
        page = page.convert("RGB")  # e.g. 16-bit or palette scans that Tesseract reads badly
    elif page.format is not None:
        # pytesseract re-saves an opened file in its own format, with its resolution tag, and
        # Tesseract then lays the page out differently; a format-less copy is always sent as
        # PNG, so the same pixels give the same words whether they came from a path or a PIL image.
        page = page.copy()
    try:
        with _single_threaded_tesseract():
            data = pytesseract.image_to_data(
                page, lang=settings.lang, config=settings.tesseract_config(), output_type=pytesseract.Output.DICT
            )
    except pytesseract.TesseractNotFoundError:
        raise AetnetError(f"the Tesseract OCR binary was not found; {_INSTALL_HINT}") from None
    except pytesseract.TesseractError as exc:
        raise AetnetError(f"Tesseract failed with settings {settings.as_dict()}: {exc}") from None
    words: list[str] = []
    boxes: list[list[float]] = []
    for text, left, top, width, height in zip(
        data["text"], data["left"], data["top"], data["width"], data["height"]
    ):
        text = str(text).strip()
        if not text:  # block/line/paragraph rows and blank detections carry no word
            continue
        words.append(text)
        boxes.append([float(left), float(top), float(left + width), float(top + height)])
    return words, boxes


def ocr_image(
    image: PageSource,
    lang: str = "eng",
    psm: int = 3,
    oem: int | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[list[str], list[list[float]]]:
    """Recognise the words of a page and their pixel boxes, using the on-disk cache.

    Args:
        image: a PIL image, the path of an image file (PNG, JPEG, TIFF: first page), its encoded
            bytes, or a :class:`~aetnet.data.documents.page_refs.DatasetRow`.
        lang: Tesseract language(s), e.g. ``"eng"`` or ``"eng+deu"``.
        psm: Tesseract page segmentation mode.
        oem: Tesseract OCR engine mode, ``None`` for its default.
        cache_dir: where cached results live; default :func:`default_cache_dir`.

    Returns:
        ``(words, boxes)``: the non-blank words in Tesseract's reading order and one box
        ``[x0, y0, x1, y1]`` per word, in pixels of the image as given.

    Raises:
        AetnetError: the Tesseract binary or a language pack is missing, or Tesseract fails.
        DataError: the image file is missing or cannot be decoded.
    """
    settings = OcrSettings(lang=lang, psm=int(psm), oem=None if oem is None else int(oem))
    words, boxes, _ = recognise(image, settings, cache_dir)
    return words, boxes


def _cache_file(content: bytes, settings: OcrSettings, cache_dir: str | Path | None,
                turned: int = 1) -> tuple[Path, str]:
    """Where the OCR of ``content`` (EXIF orientation ``turned``) is cached, and the Tesseract version
    (checks binary and languages)."""
    pytesseract = _pytesseract()
    version, installed = _tesseract_facts(str(pytesseract.pytesseract.tesseract_cmd))
    _check_languages(settings.lang, installed)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = _cache_key(content, settings, version, turned)
    return cache_root / key[:2] / f"{key}.json", version


def is_cached(image: PageSource, settings: OcrSettings, cache_dir: str | Path | None = None) -> bool:
    """Whether the page's OCR is in the cache (reads the page's bytes, never runs Tesseract).

    Raises:
        DataError: the image file is missing.
    """
    if isinstance(image, Image.Image):
        image = upright(image)
    content = _content(image)
    return _cache_file(content, settings, cache_dir, _stored_orientation(image, content))[0].is_file()


def recognise(
    image: PageSource, settings: OcrSettings, cache_dir: str | Path | None = None
) -> tuple[list[str], list[list[float]], bool]:
    """:func:`ocr_image` that also says whether the cache answered.

    Returns:
        ``(words, boxes, cached)``; ``cached`` is ``False`` when Tesseract ran for this call.
    """
    if isinstance(image, Image.Image):
        image = upright(image)  # the page as shown (EXIF orientation)
    content = _content(image)
    cache_file, version = _cache_file(content, settings, cache_dir, _stored_orientation(image, content))
    cached = _read_cache(cache_file)
    if cached is not None:
        return cached[0], cached[1], True
    page = _decode(image, content)
    words, boxes = _run_tesseract(page, settings)
    _write_cache(
        cache_file,
        {"words": words, "boxes": boxes, "settings": settings.as_dict(), "tesseract": version,
         "size": list(page.size), "format": _CACHE_FORMAT},
    )
    return words, boxes, False


def ocr_with(
    image: PageSource, settings: OcrSettings | None = None, cache_dir: str | Path | None = None
) -> tuple[list[str], list[list[float]]]:
    """:func:`ocr_image` with an :class:`OcrSettings` (default settings when ``None``)."""
    settings = settings or OcrSettings()
    return ocr_image(image, lang=settings.lang, psm=settings.psm, oem=settings.oem, cache_dir=cache_dir)
