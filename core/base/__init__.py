"""What every room stands on: the project's errors, atomic files and the cache folder, the runtime policy
(device, threads, loaders), torchrun support, the dashboard's remembered settings and who may do what."""
