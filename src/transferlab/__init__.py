"""transferlab: transfer learning on images with Lightning and Hydra."""
