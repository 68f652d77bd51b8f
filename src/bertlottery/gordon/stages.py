"""Placeholder: the package's pipeline stages (expand, execute); filled in by its owner."""


def expand(config, *args):
    raise NotImplementedError("not built yet")


def execute(stage, out, inputs, config, progress):
    raise NotImplementedError("not built yet")
