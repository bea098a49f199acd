"""placeholder"""

from common.xrefine.core import *  # noqa: F401,F403
from common.xrefine.core import __all__  # noqa: F401
