"""hotformerloc: lidar place recognition across ground and aerial views (HOTFormerLoc)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hotformerloc")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str) -> object:
    # Lazy: `import hotformerloc` stays light (the CLI, the generator); the network and
    # torch load on first use of `hotformerloc.create_model` / `list_models`.
    if name in ("create_model", "list_models"):
        from hotformerloc import model

        return getattr(model, name)
    raise AttributeError(f"module 'hotformerloc' has no attribute {name!r}")
