"""The application on top of every layer: the ``echotune`` command line and the demo.

This is the composition root: the only package that imports ``pipelines`` and ``serving`` together.
The libraries it composes live below it (``serving``, ``pipelines``, ``experiments``, ``core``,
``models``), and none of them imports it.
"""

__version__ = "0.1.0"
