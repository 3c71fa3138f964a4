"""The Label Studio ML backend: Flask app, protocol parsing, brush RLE, image fetching, session cache.

Entry points: :func:`backend.app.create_app` (the WSGI app), ``adaptiveclick serve`` (:mod:`backend.server`).
:mod:`backend.rle` and :mod:`backend.images` are also used outside requests (fine-tuning reads LS exports).
"""
