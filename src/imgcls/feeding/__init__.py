"""Fast feeding: the machinery that keeps the loader as fast as the model eats.

- image_io.py: any image file -> uint8 array (reduced-size JPEG decode, EXIF, every PIL mode);
- cache.py: decode + crop + resize once into a memory-mapped uint8 file, read back with one pread per image;
- checks.py: unreadable files found once per dataset, before the split;
- collate.py, batch_pool.py: uint8 batches straight into recycled shared-memory buffers;
- workers.py: worker set-up (OpenCV threads, seeds); loaders.py: `make_loader` for every stage.
"""
