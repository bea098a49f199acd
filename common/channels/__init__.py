"""Channel sources: a task (one channel distribution) -> complex channel tensors."""

from common.channels.base import (
    ChannelTask,
    available_sources,
    get_source,
    register_source,
    sample_channels,
)

__all__ = ["ChannelTask", "available_sources", "get_source", "register_source", "sample_channels"]
