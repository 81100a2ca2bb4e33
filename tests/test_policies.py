"""timm's augmentation policies on uint8 (src/imgcls/data/policies.py): the same op lists, policy tables and
magnitudes as timm's `auto_augment.py`, each op agreeing with timm's PIL op, and every draw seeded per image."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from PIL import Image
from timm.data import auto_augment as timm_aa

from imgcls.data import policies
from imgcls.data.dataset import ImageDataset
from imgcls.data.image_ops import FILL, OPS
from imgcls.data.policies import RandomErasing, _timm_argument


def _ours(timm_name: str) -> str:
    """timm's op name -> ours: one op per kind, the level mapping says increasing or original."""
    for suffix in ("Increasing", "Original", "Rel"):
        timm_name = timm_name.removesuffix(suffix)
    return timm_name


def test_op_lists_and_the_imagenet_policy_are_timms():
    assert policies.RAND_OPS == tuple(map(_ours, timm_aa._RAND_INCREASING_TRANSFORMS))
    assert set(policies.AUGMIX_OPS) == set(map(_ours, timm_aa._AUGMIX_TRANSFORMS))
    timm_policy = [
        [(_ours(a.name), a.prob, a.magnitude) for a in sub] for sub in timm_aa.auto_augment_policy_original({})
    ]
    assert [list(sub) for sub in policies.IMAGENET_POLICY] == timm_policy


_SCALES = {  # our scale -> timm's op names that use it
    "increasing": timm_aa._RAND_INCREASING_TRANSFORMS,
    "rand": timm_aa._RAND_TRANSFORMS,
    "original": sorted({a.name for sub in timm_aa.auto_augment_policy_original({}) for a in sub}),
}


@pytest.mark.parametrize("scale", list(_SCALES))
def test_level_to_argument_is_timms(scale):
    for timm_name in (n for n in _SCALES[scale] if timm_aa.LEVEL_TO_ARG[n] is not None):  # None: no level
        for level in range(11):
            theirs = timm_aa.LEVEL_TO_ARG[timm_name](level, {"translate_pct": 0.45})
            if theirs:  # timm negates some at random: ours with either sign
                mine = [_timm_argument(_ours(timm_name), level, sign, scale) for sign in (1, -1)]
                assert theirs[0] == pytest.approx(mine[0]) or theirs[0] == pytest.approx(mine[1]), (timm_name, level)


_ARGS = {
    "AutoContrast": (None, ()),
    "Equalize": (None, ()),
    "Invert": (None, ()),
    "Posterize": (3, (3,)),
    "Solarize": (100, (100,)),
    "SolarizeAdd": (60, (60,)),
    "Brightness": (1.4, (1.4,)),
    "Color": (0.4, (0.4,)),
    "Contrast": (1.5, (1.5,)),
    "Sharpness": (1.8, (1.8,)),
    "Rotate": (20.0, (20.0,)),
    "ShearX": (0.2, (0.2,)),
    "ShearY": (-0.2, (-0.2,)),
    "TranslateX": (0.1, (0.1,)),
    "TranslateY": (-0.1, (-0.1,)),
}
_TIMM_OPS = {
    "TranslateX": "translate_x_rel",
    "TranslateY": "translate_y_rel",
    "AutoContrast": "auto_contrast",
    "SolarizeAdd": "solarize_add",
    "ShearX": "shear_x",
    "ShearY": "shear_y",
}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A smooth image with edges (a noise image would make every interpolation difference look large)."""
    y, x = np.mgrid[0:64, 0:80]
    img = np.stack([x * 3, y * 3, (x + y) * 1.5], axis=-1) % 256
    img[20:40, 25:55] = (220, 40, 90)
    return img.astype(np.uint8)


@pytest.mark.parametrize("name", list(_ARGS))
def test_each_op_agrees_with_timms_pil_op(photo, name):
    mine_arg, timm_args = _ARGS[name]
    timm_op = getattr(timm_aa, _TIMM_OPS.get(name, name.lower()))
    theirs = np.asarray(timm_op(Image.fromarray(photo), *timm_args, fillcolor=FILL, resample=Image.BILINEAR))
    mine = OPS[name](photo, mine_arg)
    assert mine.shape == photo.shape and mine.dtype == np.uint8
    diff = np.abs(mine.astype(int) - theirs.astype(int))
    # Geometry interpolates a little differently in cv2 and PIL (half-pixel centres); tones agree to rounding.
    assert diff.mean() < (1.5 if name in ("Rotate", "ShearX", "ShearY", "TranslateY") else 0.5), (name, diff.mean())
    assert not np.array_equal(mine, photo) or name == "Equalize"


POLICIES = [
    policies.RandAugment(num_ops=3, magnitude=9),
    policies.TrivialAugmentWide(),
    policies.AutoAugment(),
    policies.AugMix(),
    RandomErasing(p=1.0, count=2),
]


@pytest.mark.parametrize("op", POLICIES, ids=lambda op: type(op).__name__)
@pytest.mark.parametrize("channels", [3, 1])
def test_policies_are_seeded_per_image_and_keep_size_and_dtype(photo, op, channels):
    """Drawn from the generators ImageDataset.seed_item hands the pipeline: one seed, one result."""
    img = photo if channels == 3 else photo[..., :1].copy()
    dataset = ImageDataset.__new__(ImageDataset)
    dataset.transform, dataset._nodes = A.Compose([op]), None

    def run(seed: int) -> np.ndarray:
        dataset.seed_item(seed)
        return dataset.transform(image=img)["image"]

    outputs = [run(seed) for seed in range(40)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outputs)
    assert np.array_equal(run(5), outputs[5])
    assert len({o.tobytes() for o in outputs}) >= 8  # seeds differ -> augmentations differ


@pytest.mark.parametrize("mode", ["const", "rand", "pixel"])
@pytest.mark.parametrize("channels", [3, 1])
def test_random_erasing_modes(photo, mode, channels):
    img = photo if channels == 3 else photo[..., :1].copy()
    op = A.Compose([RandomErasing(p=1.0, mode=mode, count=1, scale=(0.2, 0.3))])
    op.set_random_seed(0)
    out = op(image=img)["image"]
    erased = (out != img).any(-1)
    assert out.shape == img.shape and 0.1 < erased.mean() < 0.35
    colours = np.unique(out[erased], axis=0)
    if mode == "const":
        assert (colours == (FILL if channels == 3 else sum(FILL) // 3)).all()
    else:  # rand: one colour per rectangle; pixel: noise
        assert len(colours) == 1 if mode == "rand" else len(colours) > 100


def test_random_erasing_draws_rectangles_as_timm_does():
    """1..count rectangles per image; aspect ratios log-uniform in [0.3, 3.3]: as many tall as wide ones."""
    op = RandomErasing(p=1.0, count=3)
    op.set_random_seed(0)
    counts, wide = set(), []
    for _ in range(400):
        holes = op.get_params_dependent_on_data({"shape": (200, 200, 3)}, {})["holes"]
        counts.add(len(holes))
        wide += [(x1 - x0) > (y1 - y0) for x0, y0, x1, y1 in holes]
    assert counts == {1, 2, 3}
    assert 0.4 < np.mean(wide) < 0.6
    with pytest.raises(ValueError, match="mode='blur'"):
        RandomErasing(mode="blur")
