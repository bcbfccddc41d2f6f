"""Everything a run writes: feature sets (one file or a folder of parts), record files, their
manifests and error lists, the journal a killed run resumes from, atomic publication, and the lock
that keeps two runs off one output. :mod:`mmcli.output.destination` owns an output from refusal to
publication; the rest are its pieces."""
