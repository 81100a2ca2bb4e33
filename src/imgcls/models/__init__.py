"""Models: a timm classifier factory, the LightningModule that trains it, its heads and losses."""

from imgcls.models.classifier import Classifier
from imgcls.models.factory import ModelConfigError, check_model_name, create_classifier, read_state_dict
from imgcls.models.heads import TaskLayout
from imgcls.models.losses import ClassificationLoss, balanced_weights, focal_loss

__all__ = [
    "Classifier",
    "ClassificationLoss",
    "ModelConfigError",
    "TaskLayout",
    "balanced_weights",
    "check_model_name",
    "create_classifier",
    "focal_loss",
    "read_state_dict",
]
