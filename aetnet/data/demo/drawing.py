"""Drawing primitives of the synthetic demo pages: fonts, seeded randomness, words with their inked boxes.

Word boxes are the true rendered extents (``ImageDraw.textbbox``), so boxes and pixels agree.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

WordBox = tuple[str, list[int]]


@functools.cache
def demo_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` pixels (cached)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or built without FreeType
        logger.warning("FreeType unavailable: demo pages use Pillow's small bitmap font")
        return ImageFont.load_default()


def seeded_rng(seed: int, *parts: object) -> random.Random:
    """A ``random.Random`` seeded by the string ``seed/part/...`` (independent of ``PYTHONHASHSEED``)."""
    return random.Random("/".join([str(seed), *map(str, parts)]))


def word_advance(draw: ImageDraw.ImageDraw, word: str, size: int) -> int:
    """Horizontal advance of ``word`` in pixels."""
    return int(round(draw.textlength(word, font=demo_font(size))))


def word_gap(draw: ImageDraw.ImageDraw, size: int) -> int:
    """Space drawn between two words in pixels."""
    return word_advance(draw, " ", size) + max(1, size // 8)  # the default font's space reads as no gap


def text_width(draw: ImageDraw.ImageDraw, text: str, size: int) -> int:
    """Width that :func:`draw_words` gives ``text`` (used to centre, right-align and wrap)."""
    words = text.split()
    return sum(word_advance(draw, w, size) for w in words) + word_gap(draw, size) * max(0, len(words) - 1)


def draw_words(draw: ImageDraw.ImageDraw, x: int, y: int, text: str, size: int) -> list[WordBox]:
    """Draws ``text`` word by word from ``(x, y)``; returns each word with its inked pixel box."""
    font, out, gap = demo_font(size), [], word_gap(draw, size)
    for word in text.split():
        draw.text((x, y), word, font=font, fill=0)
        x0, y0, x1, y1 = draw.textbbox((x, y), word, font=font)
        out.append((word, [int(x0), int(y0), int(x1), int(y1)]))
        x += word_advance(draw, word, size) + gap
    return out



def wrap(draw: ImageDraw.ImageDraw, text: str, size: int, width: int) -> list[str]:
    """Splits ``text`` into lines no wider than ``width`` pixels."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and text_width(draw, trial, size) > width:
            lines.append(line)
            trial = word
        line = trial
    return lines + ([line] if line else [])


def write_json(path: Path, obj: dict) -> None:
    """Writes ``obj`` as indented UTF-8 JSON."""
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


class Canvas:
    """A white page that records every line of words it draws (the OCR ground truth)."""

    def __init__(self, width: int, height: int) -> None:
        self.img = Image.new("L", (width, height), 255)
        self.draw = ImageDraw.Draw(self.img)
        self.lines: list[list[WordBox]] = []

    def text(self, x: int, y: int, text: str, size: int) -> list[WordBox]:
        words = draw_words(self.draw, x, y, text, size)
        self.lines.append(words)
        return words

    def right(self, x_end: int, y: int, text: str, size: int) -> list[WordBox]:
        return self.text(x_end - text_width(self.draw, text, size), y, text, size)

    def center(self, y: int, text: str, size: int) -> list[WordBox]:
        return self.text((self.img.width - text_width(self.draw, text, size)) // 2, y, text, size)

    def paragraph(self, x: int, y: int, text: str, size: int, width: int, lh: int) -> int:
        for line in wrap(self.draw, text, size, width):
            if y + lh < self.img.height - 20:  # never draw past the bottom margin
                self.text(x, y, line, size)
                y += lh
        return y

    def words(self) -> list[str]:
        return [w for line in self.lines for w, _ in line]

