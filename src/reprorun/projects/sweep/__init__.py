"""Parameter sweeps: one parent run, one child run per point.

A sweep's state lives in ``<home>/sweeps/<id>.json`` (written atomically, under a lock), so
``status``, ``resume``, ``cancel`` and ``retry_failed`` work after a crash or a reboot. One
module per concern, each importing only those above it in this list:

- ``grammar``: the ``-P NAME=EXPRESSION`` grammar and the points it expands to;
- ``state``: the state file, the sweep's folder, its locks;
- ``pinning``: the code the points run, and what changed in it since;
- ``processes``: the points' processes (``python -m reprorun.projects.trial``), alive or not;
- ``create``: ``create_sweep`` checks every point, pins the code, records the parent run;
- ``results``: ``sweep_status``, ``list_sweeps``, the best point;
- ``driver``: ``run_sweep`` starts, adopts and settles the points' processes;
- ``control``: ``cancel_sweep``, ``retry_failed``.

Nothing here prints: the driver's progress goes to its ``on_event`` callback.
"""
