"""Temperature scaling (Guo et al., 2017): one scalar T fitted on the validation split so that softmax(z / T)
matches how often the model is right; the top-1 never changes.

T divides the logits of every head. For the combined classes that equals dividing the combined log-probabilities
(a per-row constant drops out of a softmax, and an outer sum of per-task log-softmaxes stays one), so T is fitted
from the log-probabilities predict computes (Classifier.log_space). Stored beside the checkpoint
(`<name>.calibration.json`, tied to the file's hash), where predict and export find it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from imgcls.utils import get_logger, write_json_atomic

log = get_logger(__name__)
_TINY = 1e-300  # probabilities that underflowed to 0 even in float64


def softmax(log_probs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(log p / T) row by row, in float64: the probabilities at temperature T (exact from log-probs;
    from float32 probabilities `np.log(p)` loses those that underflowed to 0)."""
    z = log_probs.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    out = np.exp(z)
    return out / out.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.log(np.maximum(probs[np.arange(len(targets)), targets], _TINY)).mean())


def log_nll(log_probs: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """The NLL at temperature T from log-probabilities (log-sum-exp, no underflow)."""
    z = log_probs.astype(np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
    return float((log_norm - z[np.arange(len(targets)), targets]).mean())


def fit_temperature(log_probs: np.ndarray, targets: np.ndarray) -> float:
    """The T in [0.05, 1000] minimising the NLL of `targets` (bounded 1-D search over log T: convex in practice)."""
    result = minimize_scalar(
        lambda log_t: log_nll(log_probs, targets, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(1000.0))
    )
    return float(np.exp(result.x))


def calibration_path(checkpoint: str | os.PathLike) -> Path:
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.calibration.json")


def _digest(path: str | os.PathLike) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def save_temperature(checkpoint: str | os.PathLike, temperature: float, **record: Any) -> Path:
    """Write `<checkpoint stem>.calibration.json` (atomic) with the checkpoint's hash and how T was fitted."""
    body = {"temperature": temperature, "checkpoint": Path(checkpoint).name, "sha256": _digest(checkpoint), **record}
    return write_json_atomic(calibration_path(checkpoint), body)


def load_temperature(checkpoint: str | os.PathLike, weights: str) -> float:
    """The checkpoint's fitted temperature for these `weights` ("ema" or "raw"), 1.0 when it has none. A record
    of another file (the checkpoint was overwritten since, e.g. last.ckpt) or of the other weights is ignored
    with a warning rather than applied to weights it was not fitted for."""
    path = calibration_path(checkpoint)
    if not path.is_file():
        return 1.0
    try:
        record = json.loads(path.read_text())
        temperature = float(record["temperature"])
    except (ValueError, KeyError, TypeError):
        log.warning(f"{path} is not a calibration record: ignored (delete it, run eval.py calibrate=true)")
        return 1.0
    if record.get("sha256") != _digest(checkpoint):
        log.warning(f"{path} was fitted for an earlier {Path(checkpoint).name}: ignored (run eval.py calibrate=true)")
        return 1.0
    if record.get("weights", weights) != weights:
        log.warning(f"{path} was fitted for the {record['weights']} weights, these are {weights}: ignored")
        return 1.0
    return temperature
