"""Data held on the device (`data.placement=device`): batches drawn by index there, no loader workers.

For data that fits in device memory many times over (MNIST, CIFAR, Tiny-ImageNet sized: the default run), the
fastest small-data trainers keep the whole uint8 dataset on the GPU and augment whole batches there. Here the
pre-processing cache (feeding/cache.py) is moved to the device once; each batch is a gather of its rows and one
`DeviceAugment` call (feeding/device_augment.py) for training, or the evaluation's centre crop by slicing.

The contract is the host loader's: the epoch's order and every image's draw seed come from the same
`EpochSampler` (a function of draw_seed and epoch), each image's augmentation from its seed, so a resumed run
(`start`) replays the interrupted epoch exactly. Under DDP each rank takes its share of that one draw as
Lightning's `DistributedSamplerWrapper` would hand it out (padded to equal shares for training, unpadded and
disjoint for evaluation). Host work per batch is slicing only: the order and every image's parameters are drawn
once per epoch and copied to the device in one transfer each; nothing is read back from the device.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls.feeding.device_augment import DeviceAugment
from imgcls.resume.sampler import EpochSampler
from imgcls.utils.errors import DataConfigError
from imgcls.utils.logging import get_logger

log = get_logger(__name__)

MAX_SHARE = 0.5  # of the device's free memory (of the host's available RAM on a CPU) the images may take


def memory_left(device: torch.device) -> int:
    """Bytes free on `device`: CUDA's free memory, or the host's available RAM for a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no limit known
        return 2**62


def load_resident(cache_file: str | Path, device: torch.device) -> torch.Tensor:
    """The cache's (N, H, W, C) uint8 images as one (N, C, H, W) tensor on `device`; an error when they would
    take more than `MAX_SHARE` of its free memory."""
    array = np.load(cache_file, mmap_mode="r")
    free = memory_left(device)
    if array.nbytes > MAX_SHARE * free:
        raise DataConfigError(
            f"data.placement=device: the {len(array)} pre-processed images take {array.nbytes / 2**20:.0f} MiB, more "
            f"than half of the {free / 2**20:.0f} MiB free on {device}: use data.placement=host (or a smaller "
            "data.cache_size)"
        )
    images = torch.from_numpy(np.array(array)).to(device).permute(0, 3, 1, 2).contiguous()
    log.info(
        f"data.placement=device: {len(array)} images ({array.nbytes / 2**20:.1f} MiB) held on {device}; batches "
        "are drawn and augmented there, without loader workers"
    )
    return images


class ResidentLoader:
    """The loader of data held on the device: `{"image", "target", "index"}` batches, all device tensors.

    `rows` are the dataset's rows in the resident images, `targets` its targets. Training: `augment` and an
    `EpochSampler` (Lightning calls its `set_epoch`, found as `.sampler`); `start=(epoch, batch)` begins mid-epoch
    (see resume/loader.py). Evaluation: `crop` = (top, left, h, w) of the centre crop, every image once, in order.
    `fetch_seconds` adds up the time spent producing batches (read by callbacks/throughput.py): on a CPU that is
    the augmentation itself; on a GPU only the kernel launches, as the work is queued.
    """

    fetch_seconds = 0.0
    batch_sampler = None  # Lightning looks for a DataLoader's batch sampler (to warn about shuffled evaluation)

    def __init__(
        self,
        images: torch.Tensor,
        rows: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        *,
        augment: DeviceAugment | None = None,
        sampler: EpochSampler | None = None,
        crop: tuple[int, int, int, int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        start: tuple[int, int] | None = None,
    ) -> None:
        if (augment is None) != (sampler is None) or (augment is None) == (crop is None):
            raise ValueError("training takes augment and sampler, evaluation crop")
        device = images.device
        self.images, self.batch_size = images, int(batch_size)
        self.rows = torch.as_tensor(np.asarray(rows, np.int64), device=device)
        self.targets = torch.as_tensor(np.asarray(targets), device=device)
        self.augment, self.sampler, self.crop = augment, sampler, crop
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        self.start = tuple(start) if start is not None else None

    def shard(self) -> tuple[np.ndarray, np.ndarray | None]:
        """This rank's (positions in the dataset, draw seeds) for the current epoch."""
        if self.sampler is None:  # evaluation: disjoint, unpadded
            return np.arange(self.rank, len(self.rows), self.world_size), None
        order, seeds = self.sampler.draw()
        pad = -len(order) % self.world_size  # DistributedSampler: repeat the first ones to even the shares
        order, seeds = np.concatenate([order, order[:pad]]), np.concatenate([seeds, seeds[:pad]])
        return order[self.rank :: self.world_size], seeds[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.rows) if self.sampler is None else len(self.sampler)
        share = -(-n // self.world_size) if self.sampler is not None else len(range(self.rank, n, self.world_size))
        return share // self.batch_size if self.drop_last else -(-share // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        skip = 0
        if self.start is not None:
            epoch, skip = self.start
            self.start = None
            self.sampler.set_epoch(epoch)
        return self._batches(skip)

    def _batches(self, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        # A generator: the draw happens at the first next(), after Lightning's set_epoch for this epoch.
        positions, seeds = self.shard()
        device = self.images.device
        index = torch.as_tensor(positions, device=device)  # one transfer per epoch...
        params = None if self.augment is None else torch.as_tensor(self.augment.draw(seeds), device=device)  # ...each
        rows = self.rows[index]
        for b in range(skip, len(self)):
            begin = time.perf_counter()
            part = slice(b * self.batch_size, (b + 1) * self.batch_size)
            images = self.images[rows[part]]
            if self.augment is None:
                top, left, h, w = self.crop
                images = images[:, :, top : top + h, left : left + w]
            else:
                images = self.augment(images, params[part], int(seeds[part.start]))
            batch = {"image": images, "target": self.targets[index[part]], "index": index[part]}
            self.fetch_seconds += time.perf_counter() - begin
            yield batch

    # The position travels in the checkpoint (resume/state.py) and comes back as `start`: nothing to keep here.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
