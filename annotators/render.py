"""A page image with its predicted boxes and labels drawn on it, so a person can look
instead of reading JSON."""

import hashlib
from collections.abc import Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#9a6324")


def label_colour(label: str) -> str:
    """The same colour for a label on every page and in every run."""
    return PALETTE[hashlib.sha1(label.encode()).digest()[0] % len(PALETTE)]


def render_page(image: "Image", regions: Sequence[dict[str, Any]]) -> bytes:
    """PNG bytes of `image` with each `rectanglelabels` region of `regions` outlined and
    labelled (with its score when it has one); pass the items of this one page."""
    from PIL import ImageDraw, ImageFont

    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    size = max(12, canvas.height // 80)
    font = ImageFont.load_default(size=size)
    for item in regions:
        value = item.get("value") or {}
        if item.get("type") != "rectanglelabels" or not value.get("rectanglelabels"):
            continue
        label = value["rectanglelabels"][0]
        x0 = value["x"] * canvas.width / 100
        y0 = value["y"] * canvas.height / 100
        x1 = x0 + value["width"] * canvas.width / 100
        y1 = y0 + value["height"] * canvas.height / 100
        colour = label_colour(label)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=max(2, size // 6))
        score = item.get("score")
        caption = label if score is None else f"{label} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), caption, font=font)
        height = bottom - top
        draw.rectangle((x0, y0 - height - 4, x0 + right - left + 4, y0), fill=colour)
        draw.text((x0 + 2, y0 - height - 2 - (top - y0)), caption, fill="white", font=font)
    out = BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()
