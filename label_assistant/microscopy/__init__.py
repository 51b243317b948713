"""Microscopy files in, for labeling: reading stacks plane by plane and keeping the originals.

- :mod:`.stacks`: PNG, JPEG and TIFF files (8/16/32-bit, float, 1-4 channels, multi-page
  stacks with their axes from OME or ImageJ metadata, else tifffile's reading of the file)
  as a list of planes, each read on its own (a memory map or one page at a time: a stack is
  never loaded whole for one plane), with the pixel size where the file carries one.
- :mod:`.originals`: the channels a plane is labeled with, its display PNG (the percentile
  normalization the model sees, :func:`label_assistant.images.to_display_uint8`), the
  original plane kept by content hash in the work directory, and the task data fields that
  point a Label Studio task at it.
- :mod:`.importer`: planes -> Label Studio tasks (``label-assistant import``), resumable and
  idempotent.
"""
