"""PeeweeStateStore and the parts it delegates to (see ``facade``)."""

from .facade import PeeweeStateStore

__all__ = ["PeeweeStateStore"]
