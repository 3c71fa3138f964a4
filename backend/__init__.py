"""The Label Studio ML backend: the serving stack, thin Flask routes, the segmentation service, the session cache,
the model holder and its registry watcher, the fine-tune job launcher, and the CVAT interactor.

Entry points: :func:`backend.app.create_app` (the WSGI app), ``adaptiveclick serve`` (:mod:`backend.cli`),
:class:`backend.cvat.Interactor` (the CVAT nuclio function's handler). Label Studio's protocol, media and RLE live
in :mod:`labelstudio`; the model registry in :mod:`storage`.
"""
