"""The model side: the smp factory, masked losses, tiles and augmentation, training, tiled
inference, the one way to run a version (``predictor``), the version registry, a round of
champion and challenger (``round``, scored and decided by ``promotion``), training as a
job (``job``), and a pool scored with a version on Dask workers (``dask_pool``, imported only
when a Dask scheduler is named)."""
