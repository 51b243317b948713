"""The model side: the smp factory, masked losses, tiles and augmentation, training, tiled
inference, the one way to run a version (``predictor``), the version registry, a round of
champion and challenger (``round``, scored and decided by ``promotion``), and training as a
job (``job``)."""
