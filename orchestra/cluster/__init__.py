"""Past one machine: evaluation, tuning, indexing and serving on a Ray cluster.

Ray is an extra (``pip install "orchestra-longdoc[ray]"``); nothing here imports it at module
load, so ``orchestra`` without Ray works and ``--ray`` says what to install.

- :mod:`orchestra.cluster.connect`: joining a cluster (or starting a local one), with a quick,
  one-line refusal for an address where no cluster answers.
- :mod:`orchestra.cluster.eval`: ``orchestra eval --ray``, (question, strategy) pairs answered
  by actors that each hold one backend; rows stream into the same results.jsonl.
- :mod:`orchestra.cluster.tune`: ``orchestra tune --ray``, a trial's questions answered by the
  same kind of actors.
- :mod:`orchestra.cluster.index`: ``orchestra index DOCS... --ray``, indexes built by a Ray Data
  pipeline into the index cache.
- :mod:`orchestra.cluster.serve`: ``orchestra serve --replicas N``, the pipeline service as
  one Ray Serve deployment.
"""
