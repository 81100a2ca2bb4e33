"""Models: a timm classifier factory and the LightningModule that trains it."""

from imgcls.models.classifier import Classifier
from imgcls.models.factory import ModelConfigError, check_model_name, create_classifier, read_state_dict

__all__ = ["Classifier", "ModelConfigError", "check_model_name", "create_classifier", "read_state_dict"]
