"""Reference pipelines the course compares against, over the same files.

(a) PIL decode + torchvision v1 transforms (RandomResizedCrop, flip, RandomRotation(15), ColorJitter,
    ToTensor, Normalize): float tensors built on the CPU.
(b) timm's `create_transform(size, is_training=True)` over a torchvision ImageFolder.
(c) timm's RandAugment recipe, `create_transform(..., auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25)` (its
    erasing fills a constant, cheaper than the `pixel` noise of augment=randaugment: the comparison favours it).
Each is compared with the imgcls preset that does the same work (BASELINES: name -> (dataset factory, preset)).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from torch.utils.data import Dataset


class _PilDataset(Dataset):
    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform) -> None:  # noqa: ANN001
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):  # noqa: ANN204
        with Image.open(self.paths[index]) as img:
            return self.transform(img.convert("RGB")), self.labels[index]


def torchvision_v1(paths: Sequence[str], labels: Sequence[int], size: tuple[int, int]) -> Dataset:
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.RandomRotation(15),
            T.ColorJitter(0.3, 0.3, 0.3, 0.05),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    return _PilDataset(paths, labels, transform)


def timm_train(paths: Sequence[str], labels: Sequence[int], size: tuple[int, int]) -> Dataset:
    from timm.data import create_transform

    return _PilDataset(paths, labels, create_transform(size, is_training=True))


def timm_randaugment(paths: Sequence[str], labels: Sequence[int], size: tuple[int, int]) -> Dataset:
    from timm.data import create_transform

    transform = create_transform(size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    # timm 1.0 asks Pillow to keep 0 bits when PosterizeIncreasing draws level 10; Pillow >= 11 raises for that.
    # Capping that one op at 9.99 (1 bit) keeps the recipe's cost and lets the baseline run.
    for step in transform.transforms:
        for op in getattr(step, "ops", ()):
            if op.name == "PosterizeIncreasing":
                op.magnitude_max = 9.99
    return _PilDataset(paths, labels, transform)


BASELINES = {
    "torchvision_v1": (torchvision_v1, "strong"),
    "timm": (timm_train, "strong"),
    "timm_randaugment": (timm_randaugment, "randaugment"),
}
