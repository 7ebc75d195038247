"""Write ``metarun/data/splits/kanji.json``: the fixed split of ``dataset=kanji``.

Characters are the CJK ideographs of the installed KanjiVG (non-variant files), grouped by
their radical as KanjiVG marks it (``kvg:radical`` "general", else "tradit", else "nelson";
the radical's ``kvg:original`` form, so 氵 counts as 水). Whole radical groups go to one split,
like Omniglot's alphabets in Lake et al.'s protocol: groups in a seeded order fill the test
split to 20% of the characters, then validation to 16%, and the rest train.

    python scripts/make_kanji_split.py   # rerun only when moving to another KanjiVG release
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

from metarun.data.kanji import glyph_files, is_ideograph

SPLIT_FILE = Path(__file__).resolve().parents[1] / "metarun" / "data" / "splits" / "kanji.json"
FRACTIONS = {"test": 0.20, "val": 0.16}
SEED = 0


def radical_of(svg: Path) -> str:
    found: dict[str, str] = {}
    for group in ET.parse(svg).iter("{http://www.w3.org/2000/svg}g"):
        attrs = {key.split("}")[-1]: value for key, value in group.attrib.items()}
        if "radical" in attrs:
            radical = attrs.get("original") or attrs.get("element")
            if radical:
                found.setdefault(attrs["radical"], radical)
    for kind in ("general", "tradit", "nelson", "jis"):
        if kind in found:
            return found[kind]
    return "none"


def main() -> None:
    groups: dict[str, list[str]] = defaultdict(list)
    for code, svg in sorted(glyph_files().items()):
        if is_ideograph(code):
            groups[radical_of(svg)].append(code)
    order = sorted(groups)
    random.Random(SEED).shuffle(order)
    total = sum(len(codes) for codes in groups.values())
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "val": {}, "test": {}}
    filling = iter(["test", "val", "train"])
    current = next(filling)
    for radical in order:
        if current != "train":
            size = sum(len(c) for c in splits[current].values())
            if size >= FRACTIONS[current] * total:
                current = next(filling)
        splits[current][radical] = groups[radical]
    listing = {
        "kanjivg": version("kanjivg"),
        "grouped_by": "radical",
        "characters": {name: sum(len(c) for c in s.values()) for name, s in splits.items()},
        "splits": splits,
    }
    SPLIT_FILE.write_text(json.dumps(listing, ensure_ascii=False, indent=0, sort_keys=True) + "\n")
    print(SPLIT_FILE, listing["characters"], {n: len(s) for n, s in splits.items()})


if __name__ == "__main__":
    main()
