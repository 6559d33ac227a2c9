"""A folder of photos as the product sees it: the one image loader, the scan (index with health) and the split
(manifest), the notes kept beside a dataset, thumbnails and the bundled sample datasets."""
