"""placeholder"""

from common.csi.core import *  # noqa: F401,F403
from common.csi.core import __all__  # noqa: F401
