"""The package's exceptions, in one small hierarchy (the bottom layer: imports nothing
of the package).

Whose error it is follows from the class, not from where it was raised:

- :class:`InputError`: the user's input is wrong (a setting, a file, a model that does
  not fit the structure). A subclass of ASE's ``InputError`` (what ASE calculators
  raise for bad input) and of ``ValueError``. The command line prints its message as
  one line and exits 2.
- :class:`RunError`: the input was fine but the run could not go on (an expansion too
  large for memory, a lost Dask scheduler, a reference calculation that failed). The
  command line prints one line and exits 1.
- Anything else raised inside the package is a bug: the command line shows its
  traceback.

Every exception here derives from :class:`BodyOrderError`, so ``except BodyOrderError``
catches all of them and nothing else; every warning from :class:`BodyOrderWarning`.
"""

from __future__ import annotations

from ase.calculators.calculator import InputError as _AseInputError

__all__ = [
    "BodyOrderError",
    "BodyOrderWarning",
    "DistributedError",
    "ExpansionTooLargeError",
    "InputError",
    "LocalityError",
    "LogExistsError",
    "LogMismatchError",
    "MissingDependencyError",
    "ReferenceFailed",
    "RunError",
    "SettingError",
    "UnphysicalCurveWarning",
]


class BodyOrderError(Exception):
    """Base of every exception raised on purpose by ase-bodyorder."""


class InputError(BodyOrderError, _AseInputError, ValueError):
    """Bad input: a setting, option, file or model that cannot be used as given."""


class SettingError(InputError, TypeError):
    """A setting the calculator does not take (or cannot change), or a value of the
    wrong type; also a ``TypeError``, as Python's own unexpected keyword argument is."""


class MissingDependencyError(InputError, ImportError):
    """An optional dependency that the asked-for feature needs is not installed (the
    message names the extra to install)."""


class LocalityError(InputError):
    """The model is not local within the cutoff (or cannot be packed): the truncated
    expansion would not be exact."""


class LogExistsError(InputError, FileExistsError):
    """The log file exists and neither overwriting nor appending was asked for."""


class LogMismatchError(InputError):
    """An existing log does not match the run that wants to append to it."""


class RunError(BodyOrderError, RuntimeError):
    """The input was valid, but the run could not go on."""


class ExpansionTooLargeError(RunError):
    """The expansion needs more subclusters than allowed (``max_subclusters``)."""


class DistributedError(RunError):
    """The Dask cluster failed the work: scheduler lost, workers dying."""


class ReferenceFailed(RunError):
    """A reference calculator failed on a subcluster (the message names it)."""


class BodyOrderWarning(UserWarning):
    """Base of the package's warnings: the command line shows each as one line."""


class UnphysicalCurveWarning(BodyOrderWarning):
    """A curve (a LAMMPS pair table) falls at short range instead of rising: a run
    that reaches those distances collapses."""
