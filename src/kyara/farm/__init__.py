"""The character farm: many characters distilled as Ray tasks, resumable, with status (issue 18).

* ``kyara.farm.table``: the job table a farm directory holds (``farm.json``) and ``submit``.
* ``kyara.farm.outdir``: the farm directory itself, a local path or an fsspec URL, written atomically.
* ``kyara.farm.task``: one character's job as a worker runs it (distil with checkpoints, evaluate,
  optional stages), resuming from its last checkpoint when Ray retries it on another worker.
* ``kyara.farm.stages``: the optional per-character stages (stickers, preview, export).
* ``kyara.farm.runner``: the driver that starts Ray tasks (Ray is imported only there, lazily).
* ``kyara.farm.status``: queued / running / done / failed per character, as text, JSON and a page.

Nothing here is imported by the packages below it; Ray is an optional dependency (``kyara[farm]``).
"""
