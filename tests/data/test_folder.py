"""``dataset=folder``: a user's own image tree, both layouts, both split forms, the cache, the
errors, and whole runs through the ``metarun`` command on a tree of real Omniglot drawings."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY_ALGORITHM, TINY_SETTINGS, metarun, one_line_error
from PIL import Image

from metarun.data.episodes import EpisodeSpec
from metarun.data.folder import ImageFolder, decode_tree, scan_tree
from metarun.data.images import ImageFormat
from metarun.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_data_cache")

SPLITS = ("train", "val", "test")
SMALL1 = "images_background_small1"


def write_image(path: Path, seed: int, size: int = 6) -> None:
    """A real image file in the format its suffix names: seeded random RGB pixels."""
    rng = random.Random(seed)
    pixels = bytes(rng.randrange(256) for _ in range(size * size * 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", (size, size), pixels).save(path)


def write_tree(root: Path, classes: dict[str, int], suffix: str = ".png", seed: int = 0) -> Path:
    """``root/<name>/<i><suffix>`` for each ``{name: images}``; a name may be ``group/class``."""
    for name, count in classes.items():
        for i in range(count):
            seed += 1
            write_image(root / name / f"{i:02d}{suffix}", seed)
    return root


def grouped(groups: int, classes: int, images: int = 2) -> dict[str, int]:
    return {f"g{g}/c{c}": images for g in range(groups) for c in range(classes)}


def flat(classes: int, images: int = 2) -> dict[str, int]:
    return {f"class{c:02d}": images for c in range(classes)}


@pytest.fixture
def folder(data_cache_dir: Path) -> Callable[..., ImageFolder]:
    """``folder(root, **options)``: an ``ImageFolder`` with tiny images and the test cache."""

    def make(root: Path, **options: object) -> ImageFolder:
        settings: dict = {"image_size": 6, "cache_dir": str(data_cache_dir)}
        settings.update(options)
        return ImageFolder(str(root), **settings)

    return make


def splits_of(data: ImageFolder) -> dict[str, list[str]]:
    return {split: data.classes(split).names for split in SPLITS}


def assert_partition(splits: dict[str, list[str]], every: set[str]) -> None:
    names = [n for split in SPLITS for n in splits[split]]
    assert len(names) == len(set(names)), "a class is in two splits"
    assert set(names) == every
    assert all(splits[split] for split in SPLITS)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------- reading trees


def test_the_classes_layout_reads_every_image_format_and_ignores_the_rest(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = tmp_path / "photos"
    suffixes = [".png", ".jpg", ".JPEG", ".bmp", ".gif", ".webp", ".tif", ".TIFF"]
    for c, suffix in enumerate(suffixes):
        write_tree(root, {f"kind{c}": 2}, suffix, seed=10 * c)
    (root / "kind0" / "notes.txt").write_text("not an image")
    (root / "kind0" / "labels.csv").write_text("file,label\n")
    write_image(root / "kind0" / ".hidden.png", 99)
    write_image(root / ".thumbnails" / "kind0" / "00.png", 98)
    write_image(root / "kind1" / ".cache" / "x.png", 97)  # inside a hidden folder

    layout, classes = scan_tree(root, "auto")
    assert layout == "classes"
    assert list(classes) == [f"kind{c}" for c in range(len(suffixes))]
    assert all(len(paths) == 2 for paths in classes.values())

    data = folder(root, split={"train": ["kind0", "kind1", "kind2", "kind3"], "val": ["kind4"]})
    train = data.classes("train")
    assert train.images.dtype == torch.uint8 and train.images.shape == (8, 3, 6, 6)
    assert data.classes("test").names == ["kind5", "kind6", "kind7"]
    assert data.task.input_shape == (3, 6, 6)


def test_the_grouped_layout_names_classes_group_slash_class(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = write_tree(tmp_path / "tree", grouped(groups=4, classes=3, images=3))
    layout, classes = scan_tree(root, "auto")
    assert layout == "groups"
    assert list(classes)[:4] == ["g0/c0", "g0/c1", "g0/c2", "g1/c0"]

    data = folder(root, within_group=True, split={"train": ["g0", "g1"], "val": ["g2"]})
    assert data.classes("train").names == ["g0/c0", "g0/c1", "g0/c2", "g1/c0", "g1/c1", "g1/c2"]
    assert data.classes("test").names == ["g3/c0", "g3/c1", "g3/c2"]
    # Within-group episodes: the three classes of every episode share a group.
    sampler = data.sampler("train", EpisodeSpec(ways=3, shots=1, queries=1))
    plan = sampler.draw(20, torch.Generator().manual_seed(0))
    classes_of = (
        torch.bucketize(plan[..., 0].contiguous(), data.classes("train").offsets, right=True) - 1
    )
    groups = data.classes("train").group_index[classes_of]
    assert (groups == groups[:, :1]).all()
    batch = sampler.gather(plan[:2])
    assert batch.support_x.shape == (2, 3, 3, 6, 6) and batch.query_x.shape == (2, 3, 3, 6, 6)


def test_auto_refuses_a_mixed_tree_naming_an_image_that_does_not_fit(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = write_tree(tmp_path / "mixed", grouped(groups=3, classes=2))
    write_image(root / "g0" / "stray.png", 50)  # root/<class>/<image> among grouped images
    with pytest.raises(DataError) as info:
        scan_tree(root, "auto")
    message = one_line(info)
    assert str(root / "g0" / "stray.png") in message and "groups layout" in message

    # An explicit layout reads only its own depth, and the data set works.
    layout, classes = scan_tree(root, "groups")
    assert layout == "groups" and len(classes) == 6 and "g0" not in classes
    assert folder(root, layout="groups").classes("train").num_classes >= 1


def test_images_directly_under_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "loose"
    for i in range(3):
        write_image(root / f"{i}.png", i)
    with pytest.raises(DataError) as info:
        scan_tree(root, "auto")
    message = one_line(info)
    assert str(root / "0.png") in message and "<class>/<image>" in message
    with pytest.raises(DataError, match="no images at"):
        scan_tree(write_tree(tmp_path / "flat", flat(3)), "groups")


def test_grayscale_inverted_images_and_preprocess_agree(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = tmp_path / "ink"
    for c in range(5):
        for i in range(2):
            path = root / f"glyph{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = bytes(0 if (x + c + i) % 3 == 0 else 255 for x in range(36))  # dark ink
            Image.frombytes("L", (6, 6), pixels).save(path)
    data = folder(root, channels=1, invert=True, normalize=False, split={"ratios": [0.6, 0.2, 0.2]})
    train = data.classes("train")
    assert train.images.shape[1:] == (1, 6, 6)
    decoded = data.decoder(train.images[:1].clone())
    assert decoded.max() == 1.0 and decoded.min() == 0.0  # ink is bright after inverting
    first = root / train.names[0] / "0.png"
    with Image.open(first) as image:
        assert torch.equal(data.preprocess(image), decoded[0])
    assert ImageFolder(str(root), channels=1).image_format.invert is False


# --------------------------------------------------------------------------- class lists


def test_class_lists_inline_with_the_rest_left_null(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = write_tree(tmp_path / "tree", grouped(groups=4, classes=2))
    data = folder(root, split={"val": "g1", "test": ["g2/c0", "g3"]})  # one name as a string
    splits = splits_of(data)
    assert splits == {
        "train": ["g0/c0", "g0/c1", "g2/c1"],
        "val": ["g1/c0", "g1/c1"],
        "test": ["g2/c0", "g3/c0", "g3/c1"],
    }
    assert_partition(splits, set(grouped(4, 2)))


def test_class_lists_from_command_line_overrides(
    tmp_path: Path, compose_config: Callable, data_cache_dir: Path
) -> None:
    """As Hydra hands them over: a DictConfig split holding ListConfigs and bare strings."""
    from metarun.run import build

    root = write_tree(tmp_path / "tree", grouped(groups=3, classes=2))
    cfg = compose_config(
        [
            "dataset=folder",
            f"dataset.root={root}",
            f"dataset.cache_dir={data_cache_dir}",
            "dataset.image_size=6",
            "dataset.split.train=[g0,g1/c0]",
            "dataset.split.val=g2",
        ]
    )
    data = build(cfg, "dataset")
    assert splits_of(data) == {
        "train": ["g0/c0", "g0/c1", "g1/c0"],
        "val": ["g2/c0", "g2/c1"],
        "test": ["g1/c1"],
    }
    ratios = compose_config(["dataset=folder", f"dataset.root={root}", "dataset.split.seed=2"])
    assert build(ratios, "dataset").split.ratios == (0.64, 0.16, 0.20)


def test_class_lists_from_txt_and_json_files(
    tmp_path: Path, folder: Callable[..., ImageFolder], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_tree(tmp_path / "tree", flat(6))
    (root / "train.txt").write_text("# training classes\nclass00\nclass01\n\nclass02\n")
    (root / "splits.json").write_text(json.dumps({"val": ["class03"], "test": ["class04"]}))
    elsewhere = tmp_path / "lists" / "test.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps(["class04", "class05"]))
    monkeypatch.chdir(tmp_path)  # relative paths: the working directory, else dataset.root
    data = folder(
        root, split={"train": "train.txt", "val": "splits.json", "test": "lists/test.json"}
    )
    assert splits_of(data) == {
        "train": ["class00", "class01", "class02"],
        "val": ["class03"],
        "test": ["class04", "class05"],
    }
    assert_partition(splits_of(data), set(flat(6)))
    # Files are read from disk, not merely named: change one and the split follows.
    json_split = {"train": "train.txt", "val": "splits.json", "test": "splits.json"}
    assert folder(root, split=json_split).classes("test").names == ["class04"]


@pytest.mark.parametrize(
    ("split", "key", "words"),
    [
        ({"train": ["class00", "klingon"], "val": ["class01"]}, "dataset.split.train", "'klingon'"),
        ({"train": ["class00", "class01"], "val": ["class01"]}, "dataset.split.val", "disjoint"),
        ({"train": [], "val": ["class01"]}, "dataset.split.train", "is empty"),
        ({"train": flat(4), "val": ["class04", "class05"]}, "dataset.split.test", "remaining"),
        ({"train": "missing.txt", "val": ["class01"]}, "dataset.split.train", "missing.txt"),
    ],
    ids=["unknown", "overlap", "empty", "nothing-left", "no-file"],
)
def test_bad_class_lists_are_config_errors(
    split: dict, key: str, words: str, tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = write_tree(tmp_path / "tree", flat(6))
    data = folder(root, split={k: list(v) if isinstance(v, dict) else v for k, v in split.items()})
    with pytest.raises(ConfigError) as info:
        data.classes("train")
    assert info.value.key == key
    assert words in one_line(info)
    if words == "'klingon'":
        assert "class00" in str(info.value)  # says what would be valid


def test_a_lone_list_or_a_stray_key_is_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ImageFolder(str(tmp_path), split={"test": ["a"]})
    assert "dataset.split.train" in info.value.key and "null" in one_line(info)
    with pytest.raises(ConfigError) as info:
        ImageFolder(str(tmp_path), split={"ratio": [0.5, 0.25, 0.25]})
    assert info.value.key == "dataset.split.ratio" and "ratios" in one_line(info)


# --------------------------------------------------------------------------- ratios


def test_ratio_split_by_class_is_seeded_and_disjoint(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = write_tree(tmp_path / "tree", flat(25))
    first = splits_of(folder(root, split={"seed": 3}))
    again = splits_of(folder(root, split={"seed": 3}))
    other = splits_of(folder(root, split={"seed": 4}))
    assert first == again
    assert first != other
    for splits in (first, other):
        assert_partition(splits, set(flat(25)))
        assert [len(splits[s]) for s in SPLITS] == [16, 4, 5]  # 0.64 / 0.16 / 0.20 of 25
    halves = splits_of(folder(root, split={"ratios": [0.5, 0.25, 0.25]}))
    assert [len(halves[s]) for s in SPLITS] in ([12, 6, 7], [13, 6, 6], [12, 7, 6])


def test_ratio_split_by_group_keeps_groups_whole(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = write_tree(tmp_path / "tree", grouped(groups=10, classes=3))
    by_group = {"by": "group", "seed": 1}
    splits = splits_of(folder(root, split=by_group))
    assert_partition(splits, set(grouped(10, 3)))
    groups = {s: {name.split("/")[0] for name in splits[s]} for s in SPLITS}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert [len(groups[s]) for s in SPLITS] == [6, 2, 2]  # 19.2 / 4.8 / 6 of 30 classes
    assert splits == splits_of(folder(root, split=by_group))
    # By class, the same seed lets groups straddle the splits.
    by_class = splits_of(folder(root, split={"seed": 1}))
    straddling = {n.split("/")[0] for n in by_class["train"]} & {
        n.split("/")[0] for n in by_class["test"]
    }
    assert straddling


@pytest.mark.parametrize(
    "ratios",
    [[0.5, 0.3, 0.3], [0.8, 0.2], [1.0, 0.0, 0.0], [0.9, 0.2, -0.1], "0.6,0.2,0.2", ["a", 1, 2]],
    ids=["sum", "two", "zero", "negative", "string", "words"],
)
def test_bad_ratios_are_config_errors(ratios: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ImageFolder(str(tmp_path), split={"ratios": ratios})
    assert info.value.key == "dataset.split.ratios"
    assert "three" in one_line(info)


def test_ratios_that_leave_a_split_empty(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    data = folder(write_tree(tmp_path / "tree", flat(3)))
    with pytest.raises(ConfigError) as info:
        data.classes("train")
    assert info.value.key == "dataset.split.ratios"
    assert "val split empty" in one_line(info) and "3 classes" in str(info.value)

    grouped_root = write_tree(tmp_path / "groups", grouped(groups=2, classes=3))
    with pytest.raises(ConfigError, match="only 2 groups"):
        folder(grouped_root, split={"by": "group"}).classes("train")
    with pytest.raises(ConfigError) as info:
        folder(tmp_path / "tree", split={"by": "group"}).classes("train")
    assert info.value.key == "dataset.split.by" and "no groups" in one_line(info)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"layout": "nested"}, "dataset.layout"),
        ({"channels": 4}, "dataset.channels"),
        ({"split": {"by": "alphabet"}}, "dataset.split.by"),
        ({"split": {"seed": "zero"}}, "dataset.split.seed"),
    ],
)
def test_bad_options_are_config_errors(options: dict, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ImageFolder(str(tmp_path), **options)
    assert info.value.key == key
    one_line(info)


# --------------------------------------------------------------------------- cache and errors


def test_decoded_once_and_rebuilt_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_tree(tmp_path / "tree", flat(3, images=2))
    cache = tmp_path / "cache"
    fmt = ImageFormat(size=6, channels=3)
    _, first = decode_tree(root, "auto", fmt, cache)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again although the cache is current")

    with monkeypatch.context() as patched:
        patched.setattr(ImageFormat, "encode", refuse)
        _, again = decode_tree(root, "auto", fmt, cache)
    assert torch.equal(first.images, again.images) and first.names == again.names

    # A new image and a new class are read.
    write_image(root / "class01" / "02.png", 500)
    write_image(root / "class03" / "00.png", 501)
    _, grown = decode_tree(root, "auto", fmt, cache)
    assert grown.counts.tolist() == [2, 3, 2, 1] and grown.names[-1] == "class03"

    # An edited image (same name) is decoded anew.
    edited = root / "class00" / "00.png"
    Image.new("RGB", (6, 6), (10, 20, 30)).save(edited)
    stat = edited.stat()
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    _, changed = decode_tree(root, "auto", fmt, cache)
    assert changed.images[0].flatten(1).T.unique(dim=0).tolist() == [[10, 20, 30]]
    assert not torch.equal(changed.images[0], grown.images[0])

    # Another size or format is a different entry, not a stale one.
    _, bigger = decode_tree(root, "auto", ImageFormat(size=4, channels=1), cache)
    assert bigger.images.shape[1:] == (1, 4, 4)


def test_an_unreadable_image_names_the_file(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    root = write_tree(tmp_path / "tree", flat(5))
    broken = root / "class02" / "01.png"
    broken.write_bytes(broken.read_bytes()[:20])  # a truncated PNG
    with pytest.raises(DataError) as info:
        folder(root).classes("train")
    assert str(broken) in one_line(info) and "not a readable image" in str(info.value)
    write_image(broken, 7)
    junk = root / "class03" / "00.jpg"
    junk.write_text("this is not a JPEG")
    with pytest.raises(DataError) as info:
        folder(root).classes("train")
    assert str(junk) in one_line(info)


def test_a_missing_or_empty_root_names_it_and_the_layout(
    tmp_path: Path, folder: Callable[..., ImageFolder]
) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        folder(missing).classes("train")
    message = one_line(info)
    assert message.startswith(f"dataset.root: {missing} does not exist")
    assert (
        f"{missing}/<class>/<image>" in message and f"{missing}/<group>/<class>/<image>" in message
    )
    empty = tmp_path / "empty"
    (empty / "some-class").mkdir(parents=True)
    (empty / "some-class" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"holds no image files \(.png"):
        folder(empty).classes("train")


# --------------------------------------------------------------------------- real drawings

# Five alphabets of the real sample, four characters each, five drawings per character.
SAMPLE_LAYOUT = {
    SMALL1: dict.fromkeys(["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"], 4)
}


@pytest.fixture(scope="module")
def drawings_root(tmp_path_factory: pytest.TempPathFactory, sample_copy: Callable) -> Path:
    """``<root>/<alphabet>/<character>/<drawing>.png``: real Omniglot drawings, grouped."""
    return sample_copy(tmp_path_factory.mktemp("drawings"), SAMPLE_LAYOUT, drawings=5) / SMALL1


def test_real_drawings_split_by_alphabet(drawings_root: Path, data_cache_dir: Path) -> None:
    data = ImageFolder(
        str(drawings_root),
        channels=1,
        invert=True,
        image_size=28,
        split={"by": "group"},
        cache_dir=str(data_cache_dir),
    )
    splits = {s: data.classes(s) for s in SPLITS}
    assert [splits[s].num_classes for s in SPLITS] == [12, 4, 4]
    assert all(set(c.counts.tolist()) == {5} for c in splits.values())
    assert splits["train"].names[0].count("/") == 1  # alphabet/character
    # Strokes are dark on white paper: after inverting, most pixels are background (zero).
    pixels = data.image_format.decode(splits["train"].images)
    assert (pixels < 0.5).float().mean() > 0.7


# --------------------------------------------------------------------------- whole runs

TINY = (
    "dataset=folder",
    "dataset.channels=1",
    "dataset.invert=true",
    "dataset.image_size=28",
    "dataset.split.by=group",
    *TINY_SETTINGS,
)
ALGORITHM = TINY_ALGORITHM


@pytest.mark.parametrize("algorithm", ["protonet", "maml"])
def test_end_to_end_on_a_folder_of_drawings(
    algorithm: str, drawings_root: Path, data_cache_dir: Path, tmp_path: Path
) -> None:
    done = metarun(
        *TINY,
        *ALGORITHM[algorithm],
        f"dataset.root={drawings_root}",
        f"dataset.cache_dir={data_cache_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("test acc ") and last.endswith("(95% CI, 6 episodes)"), last
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert run_dir.name.endswith(f"_{algorithm}-folder")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["test"]["episodes"] == 6
    assert 0.0 <= summary["test"]["mean"] <= 100.0


def test_a_missing_root_is_a_one_line_error(tmp_path: Path, data_cache_dir: Path) -> None:
    missing = tmp_path / "no-such-folder"
    done = metarun(
        *TINY, *ALGORITHM["protonet"], f"dataset.root={missing}", cwd=tmp_path, cache=data_cache_dir
    )
    line = one_line_error(done)
    assert line.startswith(f"metarun: error: dataset.root: {missing} does not exist")
    assert "<class>/<image>" in line
