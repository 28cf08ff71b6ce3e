"""Parse dataset specs of the form `name[:split][+transform[+transform...]]`."""

from typing import NamedTuple

from oodgen.errors import OodgenError

_GRAMMAR = "write it as name[:split][+transform...], e.g. fashion_mnist:test+hflip"


class Spec(NamedTuple):
    """A parsed spec; split is None when the spec names none."""

    name: str
    split: str | None
    transforms: tuple[str, ...]


def parse_spec(spec: str) -> Spec:
    """Split a spec string into its name, split and transforms (names are not checked here)."""
    if not isinstance(spec, str) or not spec.strip():
        raise OodgenError(f"dataset spec {spec!r} is empty or not a string; {_GRAMMAR}")
    head, *transforms = spec.strip().split("+")
    name, colon, split = head.partition(":")
    if not name or (colon and not split) or ":" in split or not all(transforms):
        raise OodgenError(f"malformed dataset spec {spec!r}; {_GRAMMAR}")
    return Spec(name, split if colon else None, tuple(transforms))
