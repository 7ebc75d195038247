"""Real Omniglot drawings beside rendered kanji, at the 28x28 the learners see: each row one
character, its first ``--drawings`` drawings (different people, or different random hands).

Omniglot rows come from the sample's images (``--root``); kanji rows from ``dataset=kanji``'s
renderer under each setting of ``dataset.renderer``, on characters spread over KanjiVG. Run
from the repository root::

    python scripts/kanji_picture.py --root ../shared/data/omniglot --out docs/kanji_vs_omniglot.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from metarun.data.kanji import RENDERERS, glyph_files, is_ideograph, render_all, spread  # noqa: E402


def omniglot_rows(root: Path, characters: int, drawings: int) -> list[np.ndarray]:
    folder = root / "images_background_small2"
    found = sorted(p for p in folder.glob("*/*") if p.is_dir())
    rows = []
    for character in spread([str(p) for p in found], characters):
        files = sorted(Path(character).glob("*.png"))[:drawings]
        images = [
            Image.open(f).convert("L").resize((28, 28), Image.Resampling.LANCZOS) for f in files
        ]
        rows.append(np.concatenate([np.asarray(i) for i in images], axis=1))
    return rows


def kanji_rows(renderer: str, characters: int, drawings: int) -> list[np.ndarray]:
    codes = spread(sorted(c for c in glyph_files() if is_ideograph(c)), characters)
    pixels = render_all(codes, 0, drawings, 28, RENDERERS[renderer](), workers=1)
    return [
        np.concatenate(list(pixels[i * drawings : (i + 1) * drawings]), axis=1)
        for i in range(len(codes))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/omniglot")
    parser.add_argument("--characters", type=int, default=6)
    parser.add_argument("--drawings", type=int, default=8)
    parser.add_argument("--out", default="docs/kanji_vs_omniglot.png")
    args = parser.parse_args()
    root = Path(args.root)
    if not (root / "images_background_small2").is_dir():
        sys.exit(f"kanji_picture.py: --root: {root} has no images_background_small2")
    panels = {
        "Omniglot sample (people)": omniglot_rows(root, args.characters, args.drawings),
        "kanji, dataset.renderer=handwriting": kanji_rows(
            "handwriting", args.characters, args.drawings
        ),
        "kanji, dataset.renderer=classic": kanji_rows("classic", args.characters, args.drawings),
    }
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, rows) in zip(axes, panels.items(), strict=True):
        ax.imshow(
            np.concatenate(rows, axis=0), cmap="gray", vmin=0, vmax=255, interpolation="nearest"
        )
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
