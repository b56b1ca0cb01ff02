"""wsistream's ``wsistream.torch_monitor`` import path: ``MonitoredLoader`` is defined in
``wsi_streamer.patches.torch.monitor``."""

from .torch.monitor import MonitoredLoader, batch_size_of

__all__ = ["MonitoredLoader", "batch_size_of"]
