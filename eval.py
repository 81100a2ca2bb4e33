"""Evaluate a trained checkpoint: `python eval.py ckpt_path=<run>/checkpoints/best.ckpt [split=test calibrate=true]`."""

import imgcls  # noqa: F401  (sets offline defaults before any other import)
from imgcls.cli.entry import hydra_entry

main = hydra_entry("eval", "imgcls.tasks.eval:evaluate")

if __name__ == "__main__":
    main()
