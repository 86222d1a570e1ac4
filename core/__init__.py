"""Domain-free active-learning core: pool state, uncertainty measures, selection, query registry,
loop, run store and metrics.  Nothing here imports torchvision, monai or a domain package."""
