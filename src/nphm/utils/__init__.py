"""Small shared helpers: devices and atomic file output."""
from nphm.utils.device import resolve_device
from nphm.utils.io import atomic_path, save_json, save_mesh, save_npy

__all__ = ["resolve_device", "atomic_path", "save_json", "save_mesh", "save_npy"]
