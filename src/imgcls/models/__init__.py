"""Models: a timm classifier factory, the LightningModule that trains it, its heads and losses."""

from imgcls.models.classifier import Classifier
from imgcls.models.factory import check_model_name, create_classifier
from imgcls.models.heads import MultiTaskHead, SingleHead, TaskLayout
from imgcls.models.losses import CrossEntropy, FocalLoss, balanced_weights, focal_loss
from imgcls.models.weights import ModelConfigError, read_state_dict

__all__ = [
    "Classifier",
    "CrossEntropy",
    "FocalLoss",
    "ModelConfigError",
    "MultiTaskHead",
    "SingleHead",
    "TaskLayout",
    "balanced_weights",
    "check_model_name",
    "create_classifier",
    "focal_loss",
    "read_state_dict",
]
