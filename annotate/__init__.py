"""``adaptiveclick annotate``: masks for a whole Label Studio project from the rectangles it holds, as a resumable,
shardable, rate-limited batch job that writes predictions through Label Studio's API (never annotations).

* :mod:`annotate.cli`: the command line (no torch until it runs);
* :mod:`annotate.job`: the job: list, plan, segment, post, journal;
* :mod:`annotate.journal`: the append-only journal that makes a killed job resumable;
* :mod:`annotate.progress`: ``status.json`` (progress, tasks per minute, ETA) and the summary.

It stands on the floor of ``backend`` and ``finetune`` and imports neither; the backend starts it as a job.
"""
