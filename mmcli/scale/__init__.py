"""Running a command's model work beyond one process: the Ray Data backend (:mod:`mmcli.scale.ray_backend`).

The local engine (:mod:`mmcli.engine`) stays the one that writes outputs, keeps the journal and reports;
a backend only replaces where a :class:`~mmcli.engine.Job`'s batches are computed. The engine names the
backends it can use (:data:`mmcli.engine.BACKENDS`) and imports one only when a run asks for it: this
package is a client of the engine, which nothing below it imports.
"""
