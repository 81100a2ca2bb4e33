"""The model a deployment runs: uint8 images at the checkpoint's input size in, class probabilities out.

Everything between the pixels and the probabilities is inside (normalisation, the network, the multi-head ->
combined-class product, the calibration temperature), so the file alone reproduces the checkpoint; only the
resize/crop to the input size stays outside (it depends on the image, see the model card's input spec).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import torch
from torch import nn

import imgcls
from imgcls.data.transforms import as_hw
from imgcls.models.classifier import Classifier

INPUT_NAME, OUTPUT_NAME = "image", "probs"
LAYOUTS = ("nchw", "nhwc")  # nchw: torch's (N, C, H, W); nhwc: what PIL/OpenCV arrays stack into


class Deployable(nn.Module):
    """`forward(uint8 images) -> (N, num_classes) probabilities` of one trained `Classifier`."""

    def __init__(self, classifier: Classifier, temperature: float = 1.0, layout: str = "nchw") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: use one of {', '.join(LAYOUTS)}")
        self.network = fixed_grid(classifier.model, classifier.hparams.data_spec["image_size"])
        self.head, self.layout = classifier.head, layout
        self.register_buffer("mean", classifier.mean.detach().clone())  # 0..255 units (Classifier.normalize)
        self.register_buffer("std", classifier.std.detach().clone())
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            images = images.permute(0, 3, 1, 2)
        x = (images.float() - self.mean) / self.std
        # Dividing every head's logits by one temperature = scaling each softmax (calibration, deploy/calibrate.py).
        return self.head.log_probs(self.network(x) / self.temperature).exp()


def fixed_grid(network: nn.Module, image_size: Any) -> nn.Module:
    """A ViT built with `dynamic_img_size` resamples its position embedding (antialiased bicubic) to the input's
    grid in every forward, which ONNX cannot express; a deployed file has one input size, so a copy resampled to
    it once (timm's `set_input_size`, the same resampling) computes the same numbers. Others as they are."""
    if not getattr(network, "dynamic_img_size", False) or not hasattr(network, "set_input_size"):
        return network
    fixed = copy.deepcopy(network)
    fixed.set_input_size(img_size=as_hw(image_size))  # at its own grid size the per-forward resampling returns at once
    return fixed


def input_shape(spec: dict[str, Any], layout: str) -> list[Any]:
    """The input's shape with a symbolic batch: ["N", 3, 224, 224] (nchw) or ["N", 224, 224, 3] (nhwc)."""
    height, width = as_hw(spec["image_size"])
    return ["N", spec["channels"], height, width] if layout == "nchw" else ["N", height, width, spec["channels"]]


def example_input(spec: dict[str, Any], layout: str) -> torch.Tensor:
    """A blank uint8 batch of 2 for the exporters to trace (its batch axis is declared dynamic)."""
    return torch.zeros([2 if d == "N" else d for d in input_shape(spec, layout)], dtype=torch.uint8)


def metadata(classifier: Classifier, checkpoint: str, temperature: float, layout: str) -> dict[str, str]:
    """What a deployment needs besides the graph, as strings (ONNX metadata props, TorchScript extra files):
    the classes, the input spec, the pre-processing to do before the model, and where the weights came from."""
    spec = classifier.hparams.data_spec
    return {
        "imgcls.version": imgcls.__version__,
        "imgcls.model": str(classifier.hparams.name),
        "imgcls.checkpoint": str(checkpoint),
        "imgcls.weights": str(getattr(classifier, "loaded_weights", "raw")),
        "imgcls.class_names": json.dumps([str(c) for c in spec["class_names"]]),
        "imgcls.input": json.dumps(
            {"name": INPUT_NAME, "dtype": "uint8", "layout": layout, "shape": input_shape(spec, layout)}
        ),
        "imgcls.output": json.dumps({"name": OUTPUT_NAME, "dtype": "float32", "meaning": _meaning(classifier)}),
        "imgcls.temperature": repr(float(temperature)),
        **_thresholds(classifier),
        "imgcls.data_spec": json.dumps(spec, default=str),  # the pre-processing predict.py runs (resize, crop)
    }


def _meaning(classifier: Classifier) -> str:
    if getattr(classifier, "multilabel", False):
        return "per-class probabilities (independent sigmoids: multi-label; a class is present at >= its threshold)"
    return "class probabilities"


def _thresholds(classifier: Classifier) -> dict[str, str]:
    """A multi-label model's per-class decision thresholds (tuned on validation), for whoever deploys the file."""
    if not getattr(classifier, "multilabel", False):
        return {}
    return {"imgcls.thresholds": json.dumps([round(float(t), 6) for t in classifier.thresholds])}
