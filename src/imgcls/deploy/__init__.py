"""From checkpoint to deployed file: a self-contained model (uint8 in, probabilities out), its ONNX/TorchScript
files with their metadata, the side-by-side check against PyTorch, calibration and the model card."""
