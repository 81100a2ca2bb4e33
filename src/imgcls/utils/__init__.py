"""Small helpers shared by the tasks: logging, atomic writes, Hydra instantiation, config printing."""

from imgcls.utils.io import atomic_write_bytes, atomic_write_text, write_json_atomic
from imgcls.utils.logging import get_logger
from imgcls.utils.resolvers import register_resolvers
from imgcls.utils.sweep_summary import SweepSummary, write_summary

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "get_logger",
    "register_resolvers",
    "SweepSummary",
    "write_json_atomic",
    "write_summary",
]
