"""The offline stages: videos in, index out. Each stage module exposes one plain function that a
`pig` command wraps (extract, frames, select, generate, fuse, embed_text, index, merge, shard);
videos.py and common.py are what the video-reading and the block-writing stages share."""
