"""Model artifacts, training and aggregation math, and the common base exception.

Never imports Ray.
"""

from models._errors import EdgerayError

__all__ = ["EdgerayError"]
