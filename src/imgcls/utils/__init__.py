"""Small helpers shared by every layer: logging, atomic writes, config helpers. Imports nothing else of imgcls."""

from imgcls.utils.io import atomic_output, atomic_write_bytes, atomic_write_text, write_json_atomic
from imgcls.utils.logging import get_logger

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "get_logger", "write_json_atomic"]
