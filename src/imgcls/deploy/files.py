"""Writing and reading the deployed files: ONNX (run by ONNX Runtime) and TorchScript (run by `torch.jit.load`).

Both carry the metadata of deploy/model.py (ONNX: `metadata_props`; TorchScript: the extra file `imgcls.json`),
so a file alone says its classes and input spec; both take any batch size.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls.deploy.model import INPUT_NAME, OUTPUT_NAME
from imgcls.utils import atomic_output
from imgcls.utils.errors import ConfigError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
DEPLOYED_SUFFIXES = tuple(FORMATS.values())  # what predict.py/eval.py run as an exported file, not a .ckpt
_EXTRA_FILE = "imgcls.json"


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str], opset: int) -> Path:
    """TorchScript-based exporter (`dynamo=False`): 1 s instead of 7 s for a small CNN, and what timm's own
    onnx_export uses; the batch axis is dynamic."""
    import onnx

    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings say nothing to act on
        torch.onnx.export(
            module,
            (example,),
            tmp,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            opset_version=opset,
            dynamo=False,
        )
        graph = onnx.load(tmp)
        for key, value in meta.items():
            graph.metadata_props.add(key=key, value=value)
        graph.producer_name = "imgcls"
        onnx.save(graph, tmp)
    return path


def export_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> Path:
    """`torch.jit.trace` (timm models trace; scripting many of them fails)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
    with atomic_output(path) as tmp:
        torch.jit.save(traced, tmp, _extra_files={_EXTRA_FILE: json.dumps(meta)})
    return path


@dataclass
class DeployedModel:
    """A deployed file, loaded: `probabilities(uint8 batch) -> (N, classes)` and its metadata."""

    path: Path
    format: str
    meta: dict[str, str]
    _run: Any = field(repr=False)
    tta: list[str] = field(default_factory=list)  # predict's views (hflip), averaged like a checkpoint's

    @property
    def data_spec(self) -> dict[str, Any]:
        return json.loads(self.meta["imgcls.data_spec"])

    @property
    def thresholds(self) -> list[float] | None:
        """A multi-label model's per-class thresholds (None for a single-label one)."""
        value = self.meta.get("imgcls.thresholds")
        return json.loads(value) if value else None

    @property
    def temperature(self) -> float:
        """The calibration temperature inside the file (1 = none)."""
        return float(self.meta.get("imgcls.temperature", 1.0))

    @property
    def loaded_weights(self) -> str:
        """The checkpoint weights it was exported from ("ema" or "raw"), as a Classifier's."""
        return self.meta.get("imgcls.weights", "raw")

    @property
    def layout(self) -> str:
        return json.loads(self.meta["imgcls.input"])["layout"]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 NCHW images (what the loaders batch) -> float32 probabilities; an `nhwc` file gets them
        transposed to its layout."""
        if self.layout == "nhwc":
            images = images.transpose(0, 2, 3, 1)
        return self._run(np.ascontiguousarray(images, dtype=np.uint8))


def load_deployed(path: str | os.PathLike, threads: int | None = None) -> DeployedModel:
    """An `.onnx` (ONNX Runtime, CPU) or TorchScript `.pt` file written by export.py."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path='{path}' does not exist: pass a file written by export.py")
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ConfigError(f"ckpt_path='{path}' is not a readable ONNX model ({exc}): export it again") from exc
        meta = dict(session.get_modelmeta().custom_metadata_map)
        fmt = "onnx"

        def run(images: np.ndarray) -> np.ndarray:
            return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    else:
        extra = {_EXTRA_FILE: ""}
        try:
            scripted = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:  # not a TorchScript archive (e.g. a .ckpt renamed .pt)
            raise ConfigError(f"ckpt_path='{path}' is not a TorchScript model written by export.py ({exc})") from exc
        meta = json.loads(extra[_EXTRA_FILE] or "{}")
        fmt = "torchscript"

        def run(images: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return scripted(torch.from_numpy(images)).numpy()

    if "imgcls.data_spec" not in meta:
        raise ConfigError(f"ckpt_path='{path}' has no imgcls metadata: export the checkpoint with export.py")
    return DeployedModel(path, fmt, meta, run)
