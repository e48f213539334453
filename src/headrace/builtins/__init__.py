"""Built-in sources, steps and sinks: ordinary plugins, registered through the same entry
points a third-party package uses (see pyproject.toml).

Layer: imports ``headrace.engine`` (file helpers), ``headrace.plugin``, ``headrace.config``,
``headrace.errors``.
"""
