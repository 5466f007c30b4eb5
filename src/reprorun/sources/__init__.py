"""Project sources: turn a URI into a local directory plus where the code came from."""

from reprorun.sources.local import (
    Provenance,
    ResolvedSource,
    git_info,
    resolve_source,
    strip_credentials,
)

__all__ = ["Provenance", "ResolvedSource", "git_info", "resolve_source", "strip_credentials"]
