"""Predictions drawn on their page: the PNG that ``aetnet predict --visualize`` and the server return.

:func:`draw_page` reads one page record of :class:`aetnet.predict.predictor.Predictor` (or of
:mod:`aetnet.predict.pairs`, whose key-value links are drawn as lines from key to value) and never changes it.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

#: Entity colours, by the sorted entity types of a page (repeating after ten).
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40)]


def draw_page(image: Image.Image, result: dict[str, Any]) -> Image.Image:
    """The page with its prediction drawn: word boxes coloured by entity type (token), the answer
    highlighted (qa), the class and its probability in a banner (sequence)."""
    canvas = image.convert("RGB")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width = max(1, round(max(canvas.size) / 500))
    if result["kind"] == "token":
        types = sorted({e["type"] for e in result["entities"]})
        for word in result["words"]:
            if word["label"] == "O":
                draw.rectangle(word["box"], outline=(160, 160, 160, 255), width=1)
        for ent in result["entities"]:
            colour = PALETTE[types.index(ent["type"]) % len(PALETTE)]
            for i in ent["words"]:
                draw.rectangle(result["words"][i]["box"], fill=colour + (60,))
            draw.rectangle(ent["box"], outline=colour + (255,), width=width)
            draw.text((ent["box"][0], max(0, ent["box"][1] - 11)), ent["type"], fill=colour + (255,))
    elif result["kind"] == "qa":
        if result.get("answer"):
            for box in result["answer"]["boxes"]:
                draw.rectangle(box, fill=(255, 230, 0, 110), outline=(230, 25, 75, 255), width=width)
        answer = result["answer"]["text"] if result.get("answer") else "(no answer)"
        draw.rectangle([0, 0, canvas.size[0], 14], fill=(255, 255, 255, 220))
        draw.text((2, 2), f"Q: {result['question']}  A: {answer}", fill=(0, 0, 0, 255))
    else:
        draw.rectangle([0, 0, canvas.size[0], 14], fill=(255, 255, 255, 220))
        draw.text((2, 2), f"{result['label']} ({result['score']:.2f})", fill=(230, 25, 75, 255))
    for pair in result.get("pairs", []):  # key-value links (aetnet.predict.pairs): key's right edge -> value
        k, v = pair["key_box"], pair["value_box"]
        start, end = (k[2], (k[1] + k[3]) / 2), (v[0], (v[1] + v[3]) / 2)
        draw.line([start, end], fill=(230, 25, 75, 255), width=2 * width)
        draw.ellipse([end[0] - 2 * width, end[1] - 2 * width, end[0] + 2 * width, end[1] + 2 * width],
                     fill=(230, 25, 75, 255))
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
