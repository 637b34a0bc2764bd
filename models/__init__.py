"""Model artifacts, training and aggregation math, and the common base exception.

Never imports Ray.
"""

from models._errors import (
    AliasInUse,
    BadModelRef,
    CorruptArtifact,
    EdgerayError,
    ModelError,
    ModelNotFound,
    NotAnOnnxModel,
    RegistryError,
    SignatureMismatch,
)
from models.cache import ModelResolver, NodeCache
from models.registry import Manifest, ModelRef, Registry, TensorSpec

__all__ = [
    "AliasInUse",
    "BadModelRef",
    "CorruptArtifact",
    "EdgerayError",
    "Manifest",
    "ModelError",
    "ModelNotFound",
    "ModelRef",
    "ModelResolver",
    "NodeCache",
    "NotAnOnnxModel",
    "Registry",
    "RegistryError",
    "SignatureMismatch",
    "TensorSpec",
]
