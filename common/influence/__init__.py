"""placeholder"""

from common.influence.core import *  # noqa: F401,F403
from common.influence.core import __all__  # noqa: F401
