"""Model artifacts, training and aggregation math, and the common base exception.

Never imports Ray.
"""

from models._errors import EdgerayError, ModelError, NotAnOnnxModel, SignatureMismatch

__all__ = ["EdgerayError", "ModelError", "NotAnOnnxModel", "SignatureMismatch"]
