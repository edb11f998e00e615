"""Images and datasets: the image reader, augmentation, MVTec-layout discovery, the split, the pairs layout, the
demo dataset, converters. Floor 1: imports only seas.run."""
