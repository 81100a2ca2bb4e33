"""A small fake face-mask competition dataset, so tests and the README walkthrough run offline.

`python -m imgcls.extras.competition.synth_mask --out DIR --people 60 [--eval-people 15] [--width 384 --height 512]
[--seed 0]`
writes the real competition's layout, quirks included (mixed .jpg/.jpeg/.png, macOS `._*` junk files):
  DIR/train/train.csv (id,gender,race,age,path) and DIR/train/images/<id>_<gender>_Asian_<age>/<kind>.<ext>,
      kind in mask1..mask5 (worn), incorrect_mask, normal;
  DIR/eval/info.csv (ImageID,ans=0), DIR/eval/images/<sha1>.jpg, and DIR/eval/truth.csv (the answers; not in the
      real data, it lets tests score a submission).
class = mask * 6 + gender * 3 + age_band: mask worn 0 / incorrect 1 / none 2, male 0 / female 1, age <30 / 30-59 / 60+.
The drawn portraits carry big cues a small CNN learns at 64x48 in a few CPU epochs: the mask over nose and mouth,
pulled under the nose, or absent; long vs short hair; dark, gray or white hair (plus wrinkles and glasses when older).
Everything else (skin, face shape, background, shirt, position, lighting) varies without meaning.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
EXTS = (".jpg", ".jpeg", ".png")
GENDERS = ("male", "female")
AGE_BANDS = ((18, 29), (30, 59), (60, 75))
MASKS = ((238, 238, 238), (140, 190, 232), (34, 34, 40), (236, 150, 186), None)  # None: patterned
SKINS = ((241, 204, 177), (228, 186, 152), (200, 154, 118), (165, 118, 86), (233, 192, 160))
DARK_HAIR = ((22, 18, 16), (48, 32, 22), (72, 46, 28), (30, 26, 30))
VERSION = 1  # bump when the drawing changes, so a stale `.complete` is not taken as current


def mask_state(kind: str) -> int:
    return 0 if kind.startswith("mask") else 1 if kind == "incorrect_mask" else 2


def age_band(age: int) -> int:
    return 0 if age < 30 else 1 if age < 60 else 2


def class_of(kind: str, gender: str, age: int) -> int:
    """The competition's 18 classes from a file's kind and its folder's gender and age."""
    return mask_state(kind) * 6 + GENDERS.index(gender) * 3 + age_band(age)


def _rgb(rng: np.random.Generator, base: tuple[int, ...], spread: int) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)
    return r, g, b


def person_look(rng: np.random.Generator, width: int, height: int) -> dict:
    """Who is photographed: the label cues (gender, age -> hair) and label-free variety (skin, face, backdrop)."""
    gender, band = int(rng.random() < 0.5), int(rng.integers(3))
    age = int(rng.integers(AGE_BANDS[band][0], AGE_BANDS[band][1] + 1))
    gray = int(rng.integers(105, 140)) if band == 1 else int(rng.integers(212, 242))
    hair = _rgb(rng, DARK_HAIR[rng.integers(len(DARK_HAIR))], 8) if band == 0 else (gray, gray, gray + 3)
    top, bottom = rng.uniform(70, 225) + rng.uniform(-35, 35, 3), rng.uniform(70, 225) + rng.uniform(-35, 35, 3)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    backdrop = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).astype(np.uint8)
    masks = [MASKS[k] for k in rng.permutation(len(MASKS))]  # which of mask1..5 is which style: no meaning
    return {
        "gender": gender,
        "band": band,
        "age": age,
        "hair": hair,
        "backdrop": backdrop,
        "skin": _rgb(rng, SKINS[rng.integers(len(SKINS))], 10),
        "shirt": _rgb(rng, (128, 128, 128), 110),
        "masks": masks,
        "worn_wrong": masks[rng.integers(len(masks))],
        "pattern": (_rgb(rng, (60, 80, 120), 50), _rgb(rng, (220, 210, 120), 35)),
        "dx": rng.uniform(-0.03, 0.03),
        "dy": rng.uniform(-0.025, 0.025),
        "fw": rng.uniform(0.86, 1.12),
        "fh": rng.uniform(0.94, 1.06),
        "glasses": band == 2 or (band == 1 and rng.random() < 0.3),
        "earrings": gender == 1 and rng.random() < 0.6,
    }


def draw_photo(look: dict, kind: str, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """One portrait: the person of `look` wearing `kind`, with a small per-photo shift, scale, light and noise."""
    scale = 1 + rng.uniform(-0.03, 0.03)
    cx = width * (0.5 + look["dx"] + rng.uniform(-0.015, 0.015))
    cy = height * (0.40 + look["dy"] + rng.uniform(-0.012, 0.012))
    fw, fh = width * 0.19 * look["fw"] * scale, height * 0.18 * look["fh"] * scale  # face half-width, half-height

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:  # face units -> pixels
        return [cx + x0 * fw, cy + y0 * fh, cx + x1 * fw, cy + y1 * fh]

    def pts(*xy: tuple[float, float]) -> list[tuple[float, float]]:
        return [(cx + x * fw, cy + y * fh) for x, y in xy]

    lw = max(1, round(fw / 28))
    img = Image.fromarray(look["backdrop"])
    d = ImageDraw.Draw(img)
    hair, skin = look["hair"], look["skin"]
    shade = tuple(int(c * 0.78) for c in skin)
    d.ellipse(box(-2.5, 1.75, 2.5, 6.5), fill=look["shirt"])
    if look["gender"] == 1:  # long hair down to the shoulders
        d.rounded_rectangle(box(-1.4, -1.18, 1.4, 2.5), radius=fw * 0.9, fill=hair)
    d.rectangle(box(-0.45, 0.5, 0.45, 2.0), fill=shade)  # neck
    for s in (-1, 1):
        d.ellipse(box(s * 1.0 - 0.13, -0.15, s * 1.0 + 0.13, 0.32), fill=skin)  # ears
    d.ellipse(box(-1.08, -1.22, 1.08, 0.1), fill=hair)
    d.ellipse(box(-1, -1, 1, 1), fill=skin)
    d.chord(box(-1, -1.02, 1, -0.2), 180, 360, fill=hair)  # fringe
    if look["band"] == 1:  # salt and pepper: lighter strands
        for k in range(3):
            d.arc(box(-0.9 + 0.1 * k, -1.12 + 0.1 * k, 0.9 - 0.1 * k, 0.2), 200, 340, fill=(205, 205, 208), width=lw)
    for k in range(look["band"] + 1 if look["band"] else 0):  # forehead wrinkles
        d.line(pts((-0.45, -0.5 + 0.08 * k), (0.45, -0.5 + 0.08 * k)), fill=shade, width=lw)
    for s in (-1, 1):
        d.line(pts((s * 0.62, -0.3), (s * 0.2, -0.34)), fill=hair, width=max(1, round(fh * 0.06)))  # brows
        d.ellipse(box(s * 0.4 - 0.18, -0.21, s * 0.4 + 0.18, -0.05), fill=(245, 245, 245))
        d.ellipse(box(s * 0.4 - 0.08, -0.19, s * 0.4 + 0.08, -0.07), fill=(40, 30, 25))
        if look["glasses"]:
            d.ellipse(box(s * 0.4 - 0.27, -0.3, s * 0.4 + 0.27, 0.03), outline=(25, 25, 25), width=2 * lw)
            d.line(pts((s * 0.67, -0.15), (s * 1.0, -0.12)), fill=(25, 25, 25), width=lw)
        if look["earrings"]:
            d.ellipse(box(s * 1.0 - 0.07, 0.3, s * 1.0 + 0.07, 0.44), fill=(230, 190, 40))
        if look["band"] == 2:
            d.line(pts((s * 0.25, 0.3), (s * 0.4, 0.62)), fill=shade, width=lw)  # smile lines
    d.line(pts((0, -0.15), (0, 0.22)), fill=shade, width=2 * lw)
    d.polygon(pts((0, 0.0), (-0.15, 0.32), (0.15, 0.32)), fill=shade)  # nose
    for s in (-1, 1):
        d.ellipse(box(s * 0.07 - 0.05, 0.25, s * 0.07 + 0.05, 0.32), fill=(70, 40, 35))
    d.ellipse(box(-0.3, 0.5, 0.3, 0.66), fill=(175, 70, 80))  # mouth
    d.line(pts((-0.28, 0.58), (0.28, 0.58)), fill=(90, 30, 35), width=lw)
    if mask_state(kind) < 2:
        style = look["masks"][int(kind[-1]) - 1] if kind.startswith("mask") else look["worn_wrong"]
        dy = 0.0 if kind.startswith("mask") else 0.44  # incorrect: pulled under the nose
        base = style or look["pattern"][0]
        edge = tuple(int(c * 0.8) for c in base)
        d.polygon(
            pts(
                (-1.02, 0.08 + dy),
                (-0.35, -0.05 + dy),
                (0.35, -0.05 + dy),
                (1.02, 0.08 + dy),
                (0.88, 0.8 + dy),
                (0.35, 1.1 + dy),
                (-0.35, 1.1 + dy),
                (-0.88, 0.8 + dy),
            ),
            fill=base,
            outline=edge,
        )
        for s in (-1, 1):
            d.line(pts((s * 1.0, 0.1 + dy), (s * 1.0, -0.05)), fill=edge, width=lw)  # ear loops
        for y in (0.35, 0.62):
            d.line(pts((-0.8, y + dy), (0.8, y + dy)), fill=edge, width=lw)  # pleats
        if style is None:
            for i, x in enumerate((-0.6, -0.3, 0.0, 0.3, 0.6)):
                for y in (0.2, 0.48, 0.76)[i % 2 :]:
                    d.ellipse(box(x - 0.06, y - 0.05 + dy, x + 0.06, y + 0.05 + dy), fill=look["pattern"][1])
    arr = np.asarray(img, np.float32) * rng.uniform(0.9, 1.1) + rng.integers(-5, 6, (height, width, 3), np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _save(img: Image.Image, path: Path) -> None:
    img.save(path, **({"compress_level": 1} if path.suffix == ".png" else {"quality": 90}))


def _write(root: Path, people: int, eval_people: int, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng([seed, 0])
    ids = np.cumsum(rng.integers(1, 4, people))  # increasing, with gaps like the real ids
    junk = set(rng.choice(people, min(people, max(round(people / 5), 2 if people >= 4 else 0)), replace=False).tolist())
    rows = []
    for i in range(people):
        prng = np.random.default_rng([seed, 1, i])
        look = person_look(prng, width, height)
        gender, age = GENDERS[look["gender"]], look["age"]
        folder = f"{ids[i]:06d}_{gender}_Asian_{age}"
        (root / "train" / "images" / folder).mkdir(parents=True)
        exts = prng.choice(len(EXTS), len(KINDS), p=(0.7, 0.15, 0.15))
        exts[0] = i if i < len(EXTS) else exts[0]  # the first people cover every extension, so small sets mix too
        for kind, e in zip(KINDS, exts, strict=True):
            _save(draw_photo(look, kind, prng, width, height), root / "train" / "images" / folder / f"{kind}{EXTS[e]}")
        if i in junk:  # an AppleDouble header, not an image
            (root / "train" / "images" / folder / f"._{KINDS[0]}{EXTS[exts[0]]}").write_bytes(
                b"\x00\x05\x16\x07" + prng.bytes(28)
            )
        rows.append((f"{ids[i]:06d}", gender, "Asian", age, folder))
    _write_csv(root / "train" / "train.csv", ("id", "gender", "race", "age", "path"), rows)
    answers = []
    (root / "eval" / "images").mkdir(parents=True)
    for p in range(people, people + eval_people):
        prng = np.random.default_rng([seed, 1, p])
        look = person_look(prng, width, height)
        for kind in KINDS:
            name = hashlib.sha1(f"{seed}-{p}-{kind}".encode()).hexdigest() + ".jpg"
            _save(draw_photo(look, kind, prng, width, height), root / "eval" / "images" / name)
            answers.append((name, class_of(kind, GENDERS[look["gender"]], look["age"])))
    answers = [answers[k] for k in rng.permutation(len(answers))]
    _write_csv(root / "eval" / "info.csv", ("ImageID", "ans"), [(name, 0) for name, _ in answers])
    _write_csv(root / "eval" / "truth.csv", ("ImageID", "ans"), answers)


def _write_csv(path: Path, header: tuple[str, ...], rows: list) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _complete(out: Path, params: dict) -> bool:
    try:
        return json.loads((out / ".complete").read_text()) == params
    except (OSError, ValueError):
        return False


def make_mask_dataset(
    out: str | Path,
    people: int = 60,
    eval_people: int | None = None,
    width: int = 384,
    height: int = 512,
    seed: int = 0,
) -> Path:
    """Write the dataset to `out` (made in a temp folder beside it, then moved in); a no-op when already made."""
    out = Path(out)
    eval_people = max(4, people // 4) if eval_people is None else eval_people
    if people < 1 or eval_people < 0 or width < 16 or height < 16 or seed < 0:
        raise ValueError("need people >= 1, eval_people >= 0, width and height >= 16 and seed >= 0")
    params = {
        "people": people,
        "eval_people": eval_people,
        "width": width,
        "height": height,
        "seed": seed,
        "version": VERSION,
    }
    if _complete(out, params):
        return out
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):  # an empty folder is fine to fill
        raise FileExistsError(
            f"{out} exists but is not a synth_mask dataset made with {params}: delete it or choose another --out"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        _write(tmp, people, eval_people, width, height, seed)
        (tmp / ".complete").write_text(json.dumps(params))
        try:
            os.replace(tmp, out)
        except OSError:
            if not _complete(out, params):  # unless a concurrent run got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--eval-people", type=int, default=None, help="default: max(4, people // 4)")
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        print(make_mask_dataset(args.out, args.people, args.eval_people, args.width, args.height, args.seed))
    except (FileExistsError, ValueError) as err:  # a usage problem: say so without a traceback
        parser.error(str(err))


if __name__ == "__main__":
    main()
