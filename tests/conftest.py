"""Test set-up shared by every test file: tests import helper modules from this folder, and nothing
may touch the user's config folders (ultralytics writes its settings on first import)."""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="avsep-yolo-cfg-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
