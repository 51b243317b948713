"""The model side: the smp factory, masked losses, tiles and augmentation, training, tiled
inference, the one way to run a version (``predictor``), the version registry, a round of
champion and challenger (``round``, scored and decided by ``promotion``), training as a
job (``job``), and a job on several processes with DistributedDataParallel through torchrun
(``distributed``)."""
