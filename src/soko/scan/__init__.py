"""Image scanning: the package inventory of an image (``inventory.py``), read from its layers through the
``Registry`` (manifests and blob readers), and stored so later scans never read the layers again."""
