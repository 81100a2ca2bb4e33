"""Project callbacks (Lightning's own ModelCheckpoint, LearningRateMonitor, ... are configured in configs/callbacks)."""

from imgcls.callbacks.last_checkpoint import LastCheckpoint
from imgcls.callbacks.pictures import RunPictures
from imgcls.callbacks.prediction_writer import RankPredictionWriter
from imgcls.callbacks.step_seeds import StepSeeds
from imgcls.callbacks.throughput import ThroughputMonitor

__all__ = ["LastCheckpoint", "RankPredictionWriter", "RunPictures", "StepSeeds", "ThroughputMonitor"]
