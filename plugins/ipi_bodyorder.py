"""i-PI PES file for ase-bodyorder, for a source checkout (the installed package holds
the same file: ``ase-bodyorder ipi plugin-path`` prints its path).

    i-pi-py_driver -m custom -P "$(ase-bodyorder ipi plugin-path)" -u -a ADDRESS \\
        -o template=h16.xyz,max_order=3

or ``<ffdirect><pes>custom</pes><pes_path>PATH</pes_path>...``. The class lives in
``ase_bodyorder.ipi_driver`` (options there and in docs/ipi.md); this file only names it.
"""

from ase_bodyorder.ipi_driver import BodyOrderDriver  # noqa: F401

__DRIVER_NAME__ = "bodyorder"
__DRIVER_CLASS__ = "BodyOrderDriver"
