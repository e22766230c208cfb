"""Training: data sampling, augmentation, losses, grouped splits, the LR range test and the loop."""
