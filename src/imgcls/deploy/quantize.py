"""Dynamic int8 quantisation of an exported ONNX model (ONNX Runtime's own): int8 weights of the matrix
products, activations quantised on the fly. For the CPU; the accuracy cost is measured by export's check."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from imgcls.utils import atomic_output

# Only the matrix products: ORT's dynamic ConvInteger is slower than its fp32 convolution on a CPU (resnet18 at
# 224², 2 threads: 0.39x at batch 1), so convolutions stay fp32; transformers (MatMul-bound) gain.
OPS = ("MatMul", "Gemm")


def quantize_onnx(source: Path, target: Path) -> Path:
    """`source` (fp32 .onnx) -> `target` with int8 weights; metadata props carried over."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with atomic_output(target) as tmp:
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.WARNING)  # the quantiser logs a line per tensor it leaves in float to the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # ORT's recommended pre-processing (shape inference, graph optimisation): among others it removes
                # the Identity nodes the exporter puts before shared weights, which the quantiser cannot take
                quant_pre_process(str(source), tmp)
                quantize_dynamic(tmp, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=list(OPS))
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
