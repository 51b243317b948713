"""The model side: architectures (smp), masked losses, tiled training and inference, versions."""
