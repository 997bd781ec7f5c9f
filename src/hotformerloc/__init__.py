"""hotformerloc: lidar place recognition across ground and aerial views (HOTFormerLoc)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hotformerloc")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
