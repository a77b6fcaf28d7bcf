"""A small dataset that is not MNIST, to try the own-data path: circles, squares and triangles of
random colours, sizes (24 to 80 pixels, not square) and positions, as RGB PNG, RGB JPEG and gray
PNG files, listed in one labels.csv with columns path,label and no split column.

    python tests/make_shapes.py shapes            # shapes/labels.csv + shapes/images/<class>/...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def make_shapes(folder: str | Path, per_class: int = 60, seed: int = 0) -> Path:
    """Writes folder/labels.csv and the images it lists; returns the CSV's path."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    rows = ["path,label"]
    for label in CLASSES:
        for i in range(per_class):
            width = int(rng.integers(24, 81))
            height = int(width * rng.uniform(0.75, 1.33))
            image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 100, 3)))
            fill = tuple(int(c) for c in rng.integers(150, 256, 3))
            r = min(width, height) * rng.uniform(0.25, 0.4)
            x, y = width / 2 + rng.uniform(-0.1, 0.1) * width, height / 2 + rng.uniform(-0.1, 0.1) * height
            draw = ImageDraw.Draw(image)
            if label == "circle":
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
            elif label == "square":
                draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
            else:
                draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
            kind = i % 3
            name = f"images/{label}/{i:03d}.{'jpg' if kind == 1 else 'png'}"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            if kind == 2:
                image = image.convert("L")
            image.save(folder / name, **({"quality": 90} if kind == 1 else {}))
            rows.append(f"{name},{label}")
    csv = folder / "labels.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return csv


if __name__ == "__main__":
    out = make_shapes(sys.argv[1] if len(sys.argv) > 1 else "shapes")
    print(f"Wrote {out} and {3 * 60} images")
