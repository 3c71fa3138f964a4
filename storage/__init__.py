"""The lowest floor: what the service keeps on disk and in object stores, with no torch import.

* :mod:`storage.paths`: the cache folder (``ADAPTIVECLICK_CACHE``), the one variable every part reads;
* :mod:`storage.files`: atomic writes and sha256 of files;
* :mod:`storage.registry`: the model registry (immutable versions, a current pointer), written by fine-tuning and
  read by the backend;
* :mod:`storage.logs`: the JSON log lines every process writes.

Importing this package imports nothing else, so the backend's registry watcher and tools read it cheaply.
"""
