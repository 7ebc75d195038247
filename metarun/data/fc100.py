"""FC100 (Oreshkin, Rodriguez & Lacoste 2018, "TADAM: Task dependent adaptive metric for improved
few-shot learning", NeurIPS): CIFAR-100 split by its 20 superclasses, 12 for meta-training
(60 classes), 4 for validation (20) and 4 for test (20), so test classes are semantically
further from the training classes than in CIFAR-FS. 600 images of 32x32 pixels per class.

The superclass split is the paper's (superclass indices 1-6, 9, 10, 15, 17-19 / 8, 11, 13, 16 /
0, 7, 12, 14), shipped with each superclass's classes in ``splits/fc100_oreshkin.json``; the
data's coarse labels must agree. Class names are ``"superclass/class"``, so
``within_group: true`` draws every episode from one superclass. Reading and caching: ``cifar100``.
"""

from __future__ import annotations

from metarun.data.cifar100 import CIFAR100Classes, split_listing
from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import SPLITS, Split

SPLIT_FILE = "fc100_oreshkin.json"


class FC100(CIFAR100Classes):
    """FC100 episodes (options: ``CIFAR100Classes`` and ``ImageDataset``)."""

    def split_names(self, classes: ClassImages) -> dict[Split, list[str]]:
        listing = split_listing(SPLIT_FILE)
        return {
            split: [
                f"{superclass}/{name}"
                for superclass, members in listing[split].items()
                for name in members
            ]
            for split in SPLITS
        }


__all__ = ["FC100"]
