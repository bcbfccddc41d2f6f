"""Running a command's model work beyond one process: the Ray Data backend (:mod:`mmcli.scale.ray_backend`).

The local engine (:mod:`mmcli.engine`) stays the one that writes outputs, keeps the journal and reports;
a backend only replaces where a :class:`~mmcli.engine.Job`'s batches are computed.
"""

BACKENDS = ("local", "ray")
