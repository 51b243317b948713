"""The model side: the smp factory, masked losses, tiles and augmentation, training, tiled
inference, the one way to run a version (``predictor``) and the images it knows
(``domain``), the version registry, a round of champion and challenger (``round``, scored
and decided by ``promotion``), training as a job (``job``), a job on several processes with
DistributedDataParallel through torchrun (``distributed``), and a pool scored with a version
on Dask workers (``dask_pool``, imported only when a Dask scheduler is named)."""
