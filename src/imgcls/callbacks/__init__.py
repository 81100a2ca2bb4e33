"""Project callbacks (Lightning's own ModelCheckpoint, LearningRateMonitor, ... are configured in configs/callbacks)."""

from imgcls.callbacks.model_summary import ModelSummary
from imgcls.callbacks.pictures import RunPictures
from imgcls.callbacks.throughput import ThroughputMonitor

__all__ = ["ModelSummary", "RunPictures", "ThroughputMonitor"]
