"""Dynamic int8 quantisation of an exported ONNX model (ONNX Runtime's own): int8 weights, activations
quantised on the fly. For the CPU; the accuracy cost is measured by export's check, not assumed."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from imgcls.utils import atomic_output


def quantize_onnx(source: Path, target: Path) -> Path:
    """`source` (fp32 .onnx) -> `target` with int8 weights; metadata props carried over."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_output(target) as tmp:
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.WARNING)  # the quantiser logs a line per tensor it leaves in float to the root logger
        try:
            with warnings.catch_warnings():  # "please run pre-processing first": shape inference, optional
                warnings.simplefilter("ignore")
                quantize_dynamic(str(source), tmp, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        quantized, original = onnx.load(tmp), onnx.load(str(source))
        kept = {p.key for p in quantized.metadata_props}
        for prop in original.metadata_props:
            if prop.key not in kept:
                quantized.metadata_props.add(key=prop.key, value=prop.value)
        quantized.metadata_props.add(key="imgcls.quantized", value="dynamic int8 (onnxruntime.quantization)")
        onnx.save(quantized, tmp)
    return target
