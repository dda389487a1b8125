"""Models: pure `nn.Module`s, one file per network, no file/video/network I/O, one config dataclass each."""
