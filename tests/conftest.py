import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.chdir(ROOT)  # configs/ paths in tests are relative to the repository root
sys.path.insert(0, str(ROOT))
