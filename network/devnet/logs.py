"""Where the devnet's processes write: log files under ``<dir>/run/logs``; the terminal keeps the view.

- ``devnet.log``: this process (the relay, the bridge, the application, Ray's driver, the libraries).
- ``ray/``: a link to the Ray session's log folder, where the coordinator and every GPU worker write
  (``worker-*.out``/``.err``): Ray's own folder, because its sockets live beside it and a path under a
  deep state directory would be too long for a Unix socket.

Known noise is silenced where it arises (``quiet_libraries``); everything else is kept in the files.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log through handlers of their own (straight to stderr) rather than the root logger's.
SELF_HANDLED_LOGGERS = ("ray", "transformers", "diffusers", "uvicorn", "uvicorn.access", "uvicorn.error")


def send_logs_to(log_dir: Path, level: int | str) -> Path:
    """Every log record and Python warning of this process goes to ``log_dir/devnet.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "devnet.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # a library's warnings.warn: into the file, not hidden
    quiet_libraries()
    route_library_loggers()
    return log_dir / "devnet.log"


def route_library_loggers() -> None:
    """Point the loggers that print on their own handlers at the root logger (the file). Run again after
    ``ray.init``, which installs its handler anew."""
    import ray  # noqa: F401 - importing ray installs its stderr handler, which is what is replaced here
    from transformers.utils import logging as transformers_logging

    transformers_logging.get_logger()  # configures its handler now, so that it is not added back later
    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    for name in SELF_HANDLED_LOGGERS:
        logger = logging.getLogger(name)
        for old in logger.handlers[:]:
            logger.removeHandler(old)
        logger.propagate = True


def link_ray_logs(log_dir: Path) -> Path | None:
    """``log_dir/ray`` -> this Ray session's log folder (None when this process did not start Ray)."""
    from ray._private import worker  # the session folder is only public through the node object

    node = getattr(worker, "_global_node", None)
    if node is None:
        return None
    link = log_dir / "ray"
    link.unlink(missing_ok=True)
    link.symlink_to(Path(node.get_session_dir_path()) / "logs", target_is_directory=True)
    return link


def quiet_libraries() -> None:
    """Silence the noise the devnet's libraries print on every run, each for its reason."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    # save_pretrained's "Writing model shards" bars: the devnet says itself that it builds the models.
    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    # transformers says once per process that CLIP/Siglip image processors fall back to their PIL
    # versions without torchvision: the devnet's pipelines run without a safety checker or an image
    # encoder, so nothing uses these processors.
    logging.getLogger("transformers.utils.import_utils").addFilter(_NotTorchvisionFallback())


class _NotTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()
