"""The encoder and how it learns: model, similarities, mining, losses, batches, augmentation, the training
loop, run folder and resume state, checkpoints, embedding, data-parallel helpers."""
