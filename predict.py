"""Predict with a trained checkpoint: `python predict.py ckpt_path=<run>/checkpoints/best.ckpt input=<img|dir|csv>`."""

import imgcls  # noqa: F401  (sets offline defaults before any other import)
from imgcls.cli.entry import hydra_entry

main = hydra_entry("predict", "imgcls.tasks.predict:predict")

if __name__ == "__main__":
    main()
