"""Network threat detection engine: sans-IO packet pipeline."""

from vmshield import native

# The compiled build of the hot modules, when there is an up-to-date one (see vmshield/native.py).
native.extend(__path__, __name__)
