"""timm's augmentation policies as albumentations ops on uint8 images: RandAugment, TrivialAugmentWide, AutoAugment,
AugMix, and timm-style random erasing.

Why written here rather than taken from timm or torchvision: theirs run on PIL images (timm) or tensors
(torchvision) one op at a time, with their own global RNG. These are albumentations ops, so they follow this
template's rules: they run after the first step brought the image to `data.image_size` (geometry at the target
size), stay uint8, and draw every random number from the op's own generators, which `ImageDataset.seed_item`
seeds per image with (seed, epoch, position): runs reproduce, workers differ, resume stays exact. The image
operations are data/image_ops.py's. Magnitudes follow timm's `timm/data/auto_augment.py` (levels 0..10) and, for
TrivialAugment, torchvision's 31-bin wide space.
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import numpy as np

from imgcls.data.image_ops import FILL, OPS, fill_for


# ---- timm's levels (0..10) -> each op's argument; `sign` is a random +-1 --------------------------------------
# timm's three scales: "increasing" (RandAugment inc1, AugMix: a larger level is always a stronger change),
# "rand" (RandAugment inc0) and "original" (AutoAugment's policy, whose Posterize keeps 4..8 bits).
def _timm_argument(name: str, level: float, sign: int, scale: str, translate_pct: float = 0.45) -> Any:
    x, increasing = level / 10.0, scale == "increasing"
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 1.0 + sign * x * 0.9 if increasing else x * 1.8 + 0.1
    posterize = {"increasing": 4 - int(x * 4), "rand": int(x * 4), "original": int(x * 4) + 4}[scale]
    return {
        "Rotate": sign * x * 30.0,
        "ShearX": sign * x * 0.3,
        "ShearY": sign * x * 0.3,
        "TranslateX": sign * x * translate_pct,
        "TranslateY": sign * x * translate_pct,
        "Posterize": max(0, posterize),
        "Solarize": 256 - int(x * 256) if increasing else int(x * 256),
        "SolarizeAdd": int(x * 110),
    }.get(name)


class _Policy(A.ImageOnlyTransform):
    """Draws a list of (op, argument) in `get_params` from the op's own generator; `apply` runs them in order."""

    def apply(self, img: np.ndarray, ops: list[tuple[str, Any]] = (), **params: Any) -> np.ndarray:
        for name, argument in ops:
            img = OPS[name](img, argument)
        return img

    def _sign(self) -> int:
        return 1 if self.py_random.random() < 0.5 else -1


RAND_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
)  # fmt: skip


class RandAugment(_Policy):
    """timm's `rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}-inc{increasing}`: `num_ops` ops drawn with
    replacement from RAND_OPS, each applied with probability `op_p` at a magnitude ~ N(magnitude, magnitude_std)
    clipped to [0, 10] (magnitude_std=inf: uniform in [0, magnitude]). `increasing`: timm's *Increasing ops,
    where a larger magnitude is always a stronger change (the recipe's `inc1`)."""

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 9.0,
        magnitude_std: float = 0.5,
        increasing: bool = True,
        op_p: float = 0.5,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.num_ops, self.magnitude, self.magnitude_std = int(num_ops), float(magnitude), float(magnitude_std)
        self.scale, self.op_p = "increasing" if increasing else "rand", float(op_p)

    def _level(self) -> float:
        if math.isinf(self.magnitude_std):
            return min(10.0, self.py_random.uniform(0.0, self.magnitude))
        level = self.py_random.gauss(self.magnitude, self.magnitude_std) if self.magnitude_std > 0 else self.magnitude
        return min(10.0, max(0.0, level))

    def get_params(self) -> dict[str, Any]:
        ops = []
        for name in (self.py_random.choice(RAND_OPS) for _ in range(self.num_ops)):
            if self.py_random.random() < self.op_p:
                ops.append((name, _timm_argument(name, self._level(), self._sign(), self.scale)))
        return {"ops": ops}


# torchvision's TrivialAugmentWide space: (op, argument at the top bin, signed); bins are linear from 0 to there.
_WIDE = {
    "Identity": (0.0, False), "ShearX": (0.99, True), "ShearY": (0.99, True), "TranslateX": (32.0, True),
    "TranslateY": (32.0, True), "Rotate": (135.0, True), "Brightness": (0.99, True), "Color": (0.99, True),
    "Contrast": (0.99, True), "Sharpness": (0.99, True), "Posterize": (6.0, False), "Solarize": (255.0, False),
    "AutoContrast": (0.0, False), "Equalize": (0.0, False),
}  # fmt: skip


class TrivialAugmentWide(_Policy):
    """One op per image, uniformly from torchvision's wide space, at a uniformly drawn bin of `num_bins`
    (interpolated bilinearly and filled with FILL like the other policies; torchvision: nearest, black)."""

    def __init__(self, num_bins: int = 31, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.num_bins = int(num_bins)

    def get_params(self) -> dict[str, Any]:
        name = self.py_random.choice(list(_WIDE))
        top, signed = _WIDE[name]
        value = top * self.py_random.randrange(self.num_bins) / (self.num_bins - 1)
        if name == "Posterize":
            return {"ops": [(name, 8 - round(value))]}
        if name == "Solarize":
            return {"ops": [(name, 255.0 - value)]}
        if name in ("TranslateX", "TranslateY"):
            value /= 224.0  # torchvision's 32 px are of a 224 image; here a fraction of the size
        if name in ("Brightness", "Color", "Contrast", "Sharpness"):
            value = 1.0 + self._sign() * value
        elif signed:
            value *= self._sign()
        return {"ops": [(name, value)]}


# AutoAugment's ImageNet policy (Cubuk et al. 2019, as in timm's `auto_augment_policy_original`):
# sub-policies of two (op, probability, level 0..10); one sub-policy per image.
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)), (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)), (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)), (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)), (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)), (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)  # fmt: skip


class AutoAugment(_Policy):
    """AutoAugment's ImageNet policy (timm's `original`): one of its 25 sub-policies per image (`p`: per image)."""

    def __init__(self, p: float = 1.0) -> None:
        super().__init__(p=p)

    def get_params(self) -> dict[str, Any]:
        ops = []
        for name, prob, level in self.py_random.choice(IMAGENET_POLICY):
            if self.py_random.random() < prob:
                ops.append((name, _timm_argument(name, level, self._sign(), "original")))
        return {"ops": ops}


AUGMIX_OPS = (
    "AutoContrast",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "Equalize",
    "Rotate",
    "Posterize",
    "Solarize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)  # fmt: skip  (timm's augmix_ops)


class AugMix(_Policy):
    """timm's `augmix-m{severity}-w{width}-d{depth}`: `width` chains of 1..3 ops (or `depth`) at levels uniform in
    [0, severity], mixed with Dirichlet(alpha) weights, then blended with the image by m ~ Beta(alpha, alpha)."""

    def __init__(self, severity: float = 3.0, width: int = 3, depth: int = -1, alpha: float = 1.0, p: float = 1.0):
        super().__init__(p=p)
        self.severity, self.width, self.depth, self.alpha = float(severity), int(width), int(depth), float(alpha)

    def get_params(self) -> dict[str, Any]:
        rng = self.py_random
        weights = [rng.gammavariate(self.alpha, 1.0) for _ in range(self.width)]
        chains = []
        for _ in range(self.width):
            depth = self.depth if self.depth > 0 else rng.randint(1, 3)
            chain = []
            for name in (rng.choice(AUGMIX_OPS) for _ in range(depth)):
                chain.append(
                    (name, _timm_argument(name, rng.uniform(0, self.severity), self._sign(), "increasing", 0.3))
                )
            chains.append(chain)
        return {
            "chains": chains,
            "weights": [w / sum(weights) for w in weights],
            "m": rng.betavariate(self.alpha, self.alpha),
        }

    def apply(self, img: np.ndarray, chains: Any = (), weights: Any = (), m: float = 0.0, **params: Any) -> np.ndarray:
        mixed = np.zeros(img.shape, np.float32)
        for chain, weight in zip(chains, weights):
            mixed += weight * super().apply(img, ops=chain).astype(np.float32)
        return np.clip((1.0 - m) * img + m * mixed + 0.5, 0, 255).astype(np.uint8)


class RandomErasing(A.Erasing):
    """timm's random erasing (`--reprob`, `--remode`, `--recount`) on uint8, its rectangles drawn as timm draws
    them: 1..`count` of them sharing an area in `scale`, a log-uniform aspect ratio in `ratio`, up to 10 tries
    each. Filled per `mode`: const = FILL, the ImageNet mean (timm's 0 after ImageNet normalisation); rand = one
    random colour per rectangle; pixel = random per pixel (timm: normal noise after normalisation; uniform
    0..255 here). Albumentations' `Erasing` paints them."""

    MODES = {"const": FILL, "rand": "random_uniform", "pixel": "random"}

    def __init__(
        self,
        p: float = 0.25,
        mode: str = "pixel",
        count: int = 1,
        scale: tuple[float, float] = (0.02, 1 / 3),
        ratio: tuple[float, float] = (0.3, 3.3),
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode={mode!r}: use one of {', '.join(self.MODES)}")
        super().__init__(scale=tuple(scale), ratio=tuple(ratio), fill=self.MODES[mode], p=p)
        self.mode, self.count = mode, int(count)
        self.log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        rng = self.py_random
        count = rng.randint(1, self.count)
        holes = []
        for _ in range(count):
            for _attempt in range(10):
                area = rng.uniform(*self.scale) * height * width / count
                aspect = math.exp(rng.uniform(*self.log_ratio))
                h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                if 0 < h < height and 0 < w < width:
                    top, left = rng.randint(0, height - h), rng.randint(0, width - w)
                    holes.append([left, top, left + w, top + h])
                    break
        if self.mode == "const":  # one value per channel: grayscale images get the mean's grey
            self.fill = fill_for(params["shape"][2] if len(params["shape"]) == 3 else 1)
        return {"holes": np.array(holes, np.int32).reshape(-1, 4), "seed": self.random_generator.integers(2**32 - 1)}


__all__ = ["AugMix", "AutoAugment", "RandAugment", "RandomErasing", "TrivialAugmentWide"]
