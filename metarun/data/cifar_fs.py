"""CIFAR-FS (Bertinetto, Henriques, Torr & Vedaldi 2019, "Meta-learning with differentiable
closed-form solvers", ICLR): CIFAR-100's 100 classes split at random into 64 meta-training,
16 validation and 20 test classes, 600 images of 32x32 pixels each (train and test pooled).

The class lists are the authors' (``splits/cifar_fs_bertinetto.json``, as in their
``data/CIFAR_FS/splits/bertinetto`` files). Class names are ``"superclass/class"``; CIFAR-FS
ignores superclasses, but ``within_group`` can use them. Reading and caching: ``cifar100``.
"""

from __future__ import annotations

from metarun.data.cifar100 import CIFAR100Classes, class_of, split_listing
from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import SPLITS, Split

SPLIT_FILE = "cifar_fs_bertinetto.json"


class CIFARFS(CIFAR100Classes):
    """CIFAR-FS episodes (options: ``CIFAR100Classes`` and ``ImageDataset``)."""

    def split_names(self, classes: ClassImages) -> dict[Split, list[str]]:
        listing = split_listing(SPLIT_FILE)
        full = {class_of(name): name for name in classes.names}
        # A class the data lacks keeps its bare name, so the error can name it.
        return {split: [full.get(c, c) for c in listing[split]] for split in SPLITS}


__all__ = ["CIFARFS"]
