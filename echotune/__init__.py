"""EchoTune's shared core: settings, the contracts every module speaks (schemas, Redis key layout),
the embedded Redis server and the ``echotune`` command line."""

__version__ = "0.1.0"
