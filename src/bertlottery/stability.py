"""Placeholder: the package's owner replaces this with its commands."""


def register(sub) -> None:  # noqa: ARG001 - filled in by the package's owner
    return None
