"""Everything the service says to and hears from Label Studio, with no torch import.

* :mod:`labelstudio.protocol`: the ML-backend protocol (``/predict``, ``/setup``): a request parsed once into a
  typed :class:`~labelstudio.protocol.ClickRequest`, a reply formatted once;
* :mod:`labelstudio.label_config`: which tags of a labelling config take the clicks and the masks;
* :mod:`labelstudio.rle`: Label Studio's brush RLE, byte-identical to label-studio-sdk's;
* :mod:`labelstudio.polygons`: a mask as polygons, one per connected part, holes cut in or filled;
* :mod:`labelstudio.auth`: personal access tokens and legacy tokens;
* :mod:`labelstudio.media`: task images from uploads, local files, cloud storage, http(s) and ``data:`` URIs;
* :mod:`labelstudio.api`: a project's tasks through the API or an export file;
* :mod:`labelstudio.regions`: annotation regions (brush, polygon, keypoint) as masks;
* :mod:`labelstudio.settings`: the ``LABEL_STUDIO_*`` and image-fetching settings, checked;
* :mod:`labelstudio.errors`: errors that carry their HTTP status.

Both the backend and fine-tuning use this floor; it imports only :mod:`storage` of the project.
"""
