"""Where the image of a Label Studio task is, and how Label Studio should be told where an image is.

In (``convert labelstudio``): a task's image reference is resolved against the ``--images`` folder.
Every form Label Studio writes is read for the relative path it carries:

- local storage ``/data/local-files/?d=scans/batch1/x.jpg`` -> ``scans/batch1/x.jpg``;
- uploads ``/data/upload/3/1a2b3c4d-x.jpg`` -> ``3/1a2b3c4d-x.jpg`` (the file keeps its ``<hash>-`` prefix
  in ``media/upload/3/``; the name without it is tried too);
- cloud storage ``s3://bucket/scans/x.jpg``, ``gs://...``, ``azure-blob://...`` -> ``bucket/scans/x.jpg``;
- ``http(s)://host/path/x.jpg`` -> ``path/x.jpg``; a plain path is used as it is.

The longest tail of that path that exists under ``--images`` wins (``scans/batch1/x.jpg``, then
``batch1/x.jpg``, then ``x.jpg``), so ``--images`` may be the storage root or a folder inside it, and
files of the same name in different subfolders stay apart. A reference that resolves nowhere is reported.

Out (``predict --format labelstudio``): :func:`image_url` gives the reference Label Studio can show:
``--image-url-prefix`` + the path relative to ``--images-root`` (or the file name), or with
``--local-files-root`` the local-storage URL ``/data/local-files/?d=<path relative to that root>``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, unquote, urlsplit

from aetnet.errors import AetnetError

#: A reference longer than this is shortened in messages (a ``data:`` URL can be megabytes).
SHOWN = 120


def shown(ref: str) -> str:
    """``ref`` for a message: whole when short, else its start and end around an ellipsis."""
    return ref if len(ref) <= SHOWN else f"{ref[:60]}...{ref[-40:]} ({len(ref)} characters)"


def reference_path(ref: str) -> str | None:
    """The relative path a task's image reference carries (see the module doc); ``None`` for a
    ``data:`` URL or an empty reference."""
    ref = ref.strip()
    if not ref or ref.startswith("data:"):
        return None
    parts = urlsplit(ref)
    query = parse_qs(parts.query)
    if "d" in query:  # local storage: /data/local-files/?d=<path under the storage root>
        return query["d"][0].lstrip("/")
    path = unquote(parts.path)
    if parts.scheme in ("http", "https") or not parts.scheme or len(parts.scheme) == 1:  # 1: a Windows drive
        if path.startswith("/data/upload/"):
            return path[len("/data/upload/"):]
        return path.lstrip("/") if parts.scheme else path
    return f"{parts.netloc}/{path.lstrip('/')}".strip("/")  # s3://bucket/key -> bucket/key


def candidates(ref: str) -> list[str]:
    """Relative paths to look for under ``--images``, most specific first."""
    path = reference_path(ref)
    if not path:
        return []
    if os.path.isabs(path):
        path = path.lstrip("/")
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    out = ["/".join(parts[i:]) for i in range(len(parts))]
    name = parts[-1] if parts else ""
    if "-" in name:  # Label Studio uploads are stored as <8 hex>-<name>
        prefix, rest = name.split("-", 1)
        if len(prefix) == 8 and all(c in "0123456789abcdef" for c in prefix.lower()) and rest:
            out.append(rest)
    return out


def find_image(ref: str, images: Path) -> tuple[Path | None, str]:
    """The file under ``images`` a task's image reference names, or ``None`` and why not."""
    if ref.strip().startswith("data:"):
        return None, (f"image {shown(ref)} is embedded in the task as a data: URL; store the image as a file "
                      "in --images and refer to it by path or URL")
    tried = candidates(ref)
    if not tried:
        return None, f"image reference {shown(ref)!r} names no file; give the image's path or URL"
    for relative in tried:
        candidate = images / relative
        try:
            if candidate.is_file():
                return candidate, ""
        except OSError as exc:  # e.g. a file name longer than the file system allows
            return None, (f"image {shown(ref)} cannot be looked up in {images} ({exc.strerror or exc}); "
                          "rename the file and its reference")
    return None, (f"image {shown(ref)} not found in {images} (looked for {', '.join(map(shown, tried[:3]))}); "
                  "copy the images there or point --images at the storage root")


def image_url(path: Path, prefix: str | None, images_root: Path | None, local_files_root: Path | None) -> str:
    """The reference to write into a pre-annotation task for the image file ``path``.

    Args:
        path: the image file.
        prefix: URL prefix (e.g. ``https://bucket.example/scans/``): prefix + the path relative to
            ``images_root`` (or the file name when no root is given).
        images_root: the folder the URLs are relative to.
        local_files_root: Label Studio's local storage root (``LOCAL_FILES_DOCUMENT_ROOT``): gives
            ``/data/local-files/?d=<path relative to it>``.

    Raises:
        AetnetError: the image is not under the root given.
    """
    path = path.resolve()
    if local_files_root is not None:
        relative = _relative(path, local_files_root, "--local-files-root")
        return "/data/local-files/?d=" + quote(relative, safe="/")
    if prefix is not None:
        relative = _relative(path, images_root, "--images-root") if images_root is not None else path.name
        return prefix + quote(relative, safe="/")
    return str(path)


def _relative(path: Path, root: Path, flag: str) -> str:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise AetnetError(f"{path}: the image is not under {flag} {root}; give the folder that holds every "
                          "image") from None
