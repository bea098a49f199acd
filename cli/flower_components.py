"""The Flower app components that ``flwr run`` and the SuperNodes load (pyproject's
``[tool.flwr.app.components]``): the ClientApp, with the dispatch adapter installed first.

Flower's simulation runtime (``flwr.server.superlink.fleet.vce.vce_api.start_vce``)
loads the ClientApp in the driver process before ``run_api`` starts the thread that
hands instructions to the workers, while the ServerApp is loaded on another thread with
no ordering against it. Installing ``server.flower_dispatch`` here, and not only when
``server.app`` is imported, therefore guarantees the O(new messages) hand-off (issue
#14) for ``flwr run .`` as for ``airfleet run``. It lives in ``cli`` because it joins
the two ends; elsewhere (a SuperNode) the install is a no-op patch of an unused engine.
"""

from __future__ import annotations

from server.flower_dispatch import install

install()

from clients.app import app as clientapp  # noqa: E402  (after the install, on purpose)

__all__ = ["clientapp"]
