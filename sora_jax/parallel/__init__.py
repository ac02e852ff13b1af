"""Meshes, logical-axis sharding rules, multi-host set-up and global batches."""
