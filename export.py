"""Export a trained checkpoint: `python export.py ckpt_path=<run>/checkpoints/best.ckpt format=onnx|torchscript`."""

import imgcls  # noqa: F401  (sets offline defaults before any other import)
from imgcls.cli.entry import hydra_entry

main = hydra_entry("export", "imgcls.tasks.export:export")

if __name__ == "__main__":
    main()
