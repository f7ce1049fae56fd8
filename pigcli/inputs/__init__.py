"""What goes into the stages: video files (decode, sample, crop), the pool of decoder workers, video
sources (folders, lists, shards) and caption/query files."""
